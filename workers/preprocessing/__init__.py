"""Declarative preprocessing: turn a volume into a network's input, as a manifest says.

A manifest lists steps by name with their parameters (``PreprocessStep``); what it
may say (each step's parameters, role and the ordering rules) is the model contract,
``models.steps``. This package implements each step (``STEPS``: an operation per step
name, subclassing its parameter model) and applies them in order to whole volumes
(float32, vectorised). One module per concern: ``grid`` (where an array lies and the
record of a move), ``geometry`` (resample, canonical_orientation, crop_or_pad,
resize_inplane and their exact inverses), ``intensity`` (window, scale, zscore,
percentile_scale, clip_outliers, mask_padding), ``bias`` (n4_bias_field),
``registration`` (a second series onto the first's grid), ``slice_timing`` (a 4D
series made one volume, always the first step; a 4D series reaches no other step
without it).
``Prepared`` records every geometric change, so a network's output maps back onto
the source grid. A model with several input series has each prepared by the same
steps: intensity statistics of its own, the primary's geometric changes replayed, so
every channel lies on the one prepared grid. Training uses these same functions, so
a model sees at run time what it learnt on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.contract_errors import ManifestError
from models.manifest import PreprocessStep
from models.steps import check_steps
from workers.errors import AnalysisError, SeriesNotAnalysable
from workers.preprocessing.base import GeometricOperation, IntensityOperation, Operation
from workers.preprocessing.bias import N4BiasField
from workers.preprocessing.geometry import (
    CanonicalOrientation,
    CropOrPad,
    Grid,
    GridChange,
    Interpolation,
    Resample,
    ResizeInplane,
)
from workers.preprocessing.intensity import (
    ClipOutliers,
    MaskPadding,
    PercentileScale,
    Scale,
    Window,
    ZScore,
)
from workers.preprocessing.slice_timing import SliceTiming, TemporalOperation
from workers.volume import Volume

__all__ = [
    "STEPS",
    "CanonicalOrientation",
    "CropOrPad",
    "GeometricOperation",
    "IntensityOperation",
    "Operation",
    "Prepared",
    "Resample",
    "ResizeInplane",
    "build_steps",
    "preprocess",
    "preprocess_array",
]

STEPS: dict[str, type[Operation]] = {
    "window": Window,
    "scale": Scale,
    "zscore": ZScore,
    "percentile_scale": PercentileScale,
    "clip_outliers": ClipOutliers,
    "mask_padding": MaskPadding,
    "n4_bias_field": N4BiasField,
    "resample": Resample,
    "canonical_orientation": CanonicalOrientation,
    "crop_or_pad": CropOrPad,
    "resize_inplane": ResizeInplane,
    "slice_timing": SliceTiming,
}


@dataclass
class Prepared:
    """A network-ready array, the grid it lies on, and how it was made from the source.

    ``array`` is float32 (slices, rows, columns) after every step; ``grid`` places it
    in patient space; ``source`` is the grid of the volume it was made from;
    ``changes`` are the geometric steps applied, in order. ``additional`` holds the
    further input series, each prepared like ``array`` and on the same grid.
    """

    array: np.ndarray
    grid: Grid
    source: Grid
    changes: tuple[GridChange, ...] = ()
    additional: tuple[np.ndarray, ...] = ()

    @property
    def channels(self) -> tuple[np.ndarray, ...]:
        """Every input channel in network order: the primary series, then the others."""
        return (self.array, *self.additional)

    @property
    def source_shape(self) -> tuple[int, int, int]:
        return self.source.shape

    @property
    def slicewise(self) -> bool:
        """Whether prepared slice ``k`` comes from source slice ``k`` alone, so outputs
        can be mapped back a few slices at a time."""
        return all(change.slicewise for change in self.changes)

    def to_prepared(
        self, values: np.ndarray, interpolation: Interpolation = "nearest", fill: float = 0.0
    ) -> np.ndarray:
        """``values`` (..., slices, rows, columns) on the source grid, taken to the
        prepared grid by the same geometric steps (labels: nearest; images: linear)."""
        for change in self.changes:
            values = change.forward(values, interpolation, fill)
        return values

    def to_source(
        self, values: np.ndarray, interpolation: Interpolation = "nearest", fill: float = 0.0
    ) -> np.ndarray:
        """A network output (..., slices, rows, columns) on the prepared grid, mapped back
        onto the source grid: ``nearest`` for labels (dtype kept), ``linear`` for scores
        and probabilities (float32). Voxels no prepared voxel covers (cropped) get
        ``fill``."""
        if values.shape[-3:] != self.array.shape and not (
            self.slicewise and values.shape[-2:] == self.array.shape[-2:]
        ):
            raise ValueError(
                f"values of shape {values.shape} are not on the prepared grid {self.array.shape}"
            )
        for change in reversed(self.changes):
            values = change.inverse(values, interpolation, fill)
        return values


def build_steps(steps: Sequence[PreprocessStep]) -> list[Operation]:
    """The operations for a manifest's steps, checked by the step contract
    (``models.steps.check_steps``); AnalysisError naming the step that is wrong."""
    try:
        checked = check_steps(steps)
    except ManifestError as exc:
        raise AnalysisError(str(exc)) from exc
    return [STEPS[parameters.name].model_validate(dict(parameters)) for parameters in checked]


def _run(
    volume: Volume, operations: Sequence[Operation], replay: Sequence[GridChange] | None = None
) -> Prepared:
    """Apply the steps; with ``replay`` (another channel's changes, in order), each
    geometric step repeats its recorded change instead of deriving one."""
    source = Grid.of(volume)
    # A private float32 copy: steps work in place, the caller's volume stays untouched.
    state = Grid.of(volume).place(
        volume, np.array(volume.voxels, dtype=np.float32, copy=True, order="C")
    )
    recorded = iter(replay) if replay is not None else None
    changes: list[GridChange] = []
    for operation in operations:
        change: GridChange | None
        if recorded is not None and isinstance(operation, GeometricOperation):
            change = next(recorded)
            state = operation.replay(state, change)
        else:
            state, change = operation.apply(state)
        if change is not None:
            changes.append(change)
    return Prepared(array=state.voxels, grid=Grid.of(state), source=source, changes=tuple(changes))


def _check_one_volume(operations: Sequence[Operation], *volumes: Volume) -> None:
    """Refuse a 4D series for a model without a temporal step to make it one volume
    (which, being first, receives the volume's ``timepoints`` through ``_run``)."""
    if operations and isinstance(operations[0], TemporalOperation):
        return
    for volume in volumes:
        if volume.timepoints is not None and len(volume.timepoints) > 1:
            raise SeriesNotAnalysable(
                f"4D series of {len(volume.timepoints)} temporal positions; this model "
                "takes one volume: its manifest needs a slice_timing step"
            )


def _same_grid(a: Grid, b: Grid) -> bool:
    return (
        a.shape == b.shape
        and np.allclose(a.spacing, b.spacing, rtol=1e-4, atol=1e-4)
        and np.allclose(a.origin, b.origin, rtol=0, atol=1e-3)
        and np.allclose(a.axes, b.axes, rtol=0, atol=1e-4)
    )


def preprocess_array(
    voxels: np.ndarray,
    steps: Sequence[PreprocessStep],
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Apply the steps to a (slices, rows, columns) array on an axis-aligned grid of
    ``spacing``; the input is left untouched."""
    volume = Volume(
        voxels=voxels,
        spacing=spacing,
        origin=np.zeros(3),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        slice_direction=np.array([0.0, 0.0, 1.0]),
        datasets=[],
    )
    return _run(volume, build_steps(steps)).array


def preprocess(
    volume: Volume, steps: Sequence[PreprocessStep], additional: Sequence[Volume] = ()
) -> Prepared:
    """Make a network input from a volume, recording how to map outputs back.

    ``additional`` are further input series already on ``volume``'s grid (same shape,
    spacing, origin and directions; AnalysisError otherwise). Each gets the same steps:
    intensity steps with its own statistics, geometric ones as the primary had them.
    """
    if volume.voxels.ndim != 3 or 0 in volume.voxels.shape:
        raise SeriesNotAnalysable(f"volume of shape {volume.voxels.shape} has no slices to analyse")
    operations = build_steps(steps)
    _check_one_volume(operations, volume, *additional)
    prepared = _run(volume, operations)
    others = []
    for position, other in enumerate(additional, start=1):
        if not _same_grid(Grid.of(other), prepared.source):
            raise AnalysisError(
                f"additional input {position} (shape {other.voxels.shape}, spacing "
                f"{tuple(other.spacing)}) is not on the primary series' grid (shape "
                f"{volume.voxels.shape}, spacing {tuple(volume.spacing)}): register or "
                "resample it onto that grid first"
            )
        others.append(_run(other, operations, prepared.changes).array)
    prepared.additional = tuple(others)
    return prepared
