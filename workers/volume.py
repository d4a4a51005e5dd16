"""The in-memory forms a job's data takes between pipeline steps.

``Volume`` is a series loaded with its geometry (``workers.load``, and the register
step for further series); ``ModelOutput`` is what a model found, mapped back onto the
source geometry (``workers.postprocess``). Steps exchange these and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset


@dataclass
class Volume:
    """A series as a voxel array in slice order, with the geometry to place it.

    ``voxels`` is float32 of shape (slices, rows, columns) in modality units (HU for
    CT: rescale applied; MONOCHROME1 images inverted so that larger is brighter, see
    ``workers.pixels``). ``datasets[i]`` is the source instance of slice ``i``
    (headers; pixel data may have been dropped). Directions are unit vectors in the
    patient coordinate system; ``slice_direction`` points from slice 0 to slice 1.

    ``frame_numbers`` is None for a series of single-frame images. When the series is
    one multi-frame instance (enhanced CT/MR, legacy converted), every ``datasets[i]``
    is that one instance and ``frame_numbers[i]`` is the 1-based frame of it that is
    slice ``i``.

    A 4D series (the same slice positions acquired at several temporal positions:
    dynamic, perfusion, fMRI-like) is the volume of its first temporal position, whose
    instances ``datasets`` are; ``timepoints`` then holds every temporal position,
    float32 (time, slices, rows, columns) in the same units and slice order as
    ``voxels``, and ``slice_times`` (time, slices) when each image was acquired, in
    seconds after the series' first image (None when the headers do not say). Both
    are None for a 3D series.
    """

    voxels: np.ndarray
    spacing: tuple[float, float, float]  # (between slices, between rows, between columns) mm
    origin: np.ndarray  # ImagePositionPatient of slice 0
    row_direction: np.ndarray  # direction along a row (increasing column index)
    column_direction: np.ndarray  # direction along a column (increasing row index)
    slice_direction: np.ndarray
    datasets: list[Dataset] = field(repr=False)
    frame_numbers: list[int] | None = None
    timepoints: np.ndarray | None = field(default=None, repr=False)
    slice_times: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.voxels.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


@dataclass
class ModelOutput:
    """What a model found, in the source geometry of the series it was given.

    ``labels`` (uint8, same shape as the volume, 0 = background) holds the manifest's
    segment label values, or is None for a classification-only model.
    ``probabilities`` maps each manifest class name to its probability.
    ``slice_probabilities`` (float32, (slices, classes), manifest order) holds a 2D
    classifier's probability per source slice, which the series' probability is the
    maximum of; None for a 3D classifier (one score for the volume), or when
    preprocessing did not keep one prepared slice per source slice.
    ``segment_probabilities`` (float32, (segments, slices, rows, columns), in [0, 1])
    holds each manifest segment's probability per voxel, in manifest order; it is
    filled only for a model whose manifest asks for a fractional SEG, as it takes four
    bytes per voxel and segment.
    """

    labels: np.ndarray | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    slice_probabilities: np.ndarray | None = field(default=None, repr=False)
    segment_probabilities: np.ndarray | None = field(default=None, repr=False)
