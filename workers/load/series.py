"""The series loader: a received series as a :class:`~workers.volume.Volume` (``load_series``).

This module owns the decision whether a series can be analysed at all. It reads the
instances, decodes their pixels (any transfer syntax pydicom's installed plugins
decode), places every slice in patient space, sorts the slices along the slice
normal and checks the geometry. A series is either single-frame images (classic CT,
MR, CR, ...) or one multi-frame instance whose Per-Frame and Shared Functional
Groups place each frame (enhanced CT/MR, legacy converted enhanced); both become
the same list of slices before any geometry is checked. A series of single-frame
images whose slice positions repeat over time (dynamic, perfusion, fMRI-like: each
position at several temporal positions) is a 4D series: the volume of its first
temporal position, with every temporal position and each image's acquisition time
besides (``Volume.timepoints``, ``Volume.slice_times``). What pixel values mean
(rescale, Modality LUT, MONOCHROME1, colour) is :mod:`workers.pixels`' business.

The stages live in the sibling modules of :mod:`workers.load`; this module runs
them in order and assembles the volume.

Whatever it refuses it refuses with :class:`~workers.errors.SeriesNotAnalysable`
and a reason a radiologist or PACS administrator can act on; no other exception
escapes for a bad series.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import Dataset

from workers.errors import SeriesNotAnalysable
from workers.load.files import (
    PIXEL_DATA_KEYWORDS,
    check_identifying_uids,
    check_is_greyscale_image,
    check_one_series,
    describe,
    is_multi_frame,
    matrix_size,
    read_instance,
)
from workers.load.four_d import slice_timing, temporal_positions
from workers.load.limits import DecodeLimits, check_declared_pixels, check_series_bytes
from workers.load.multiframe import decode_frames, frame_slices
from workers.load.slices import Slice, common_pixel_spacing, decode_instance, instance_slice
from workers.load.stack import single_slice_geometry, stack_geometry
from workers.pixels import inversion_pivot
from workers.volume import Volume


def load_series(paths: Sequence[Path], limits: DecodeLimits | None = None) -> Volume:
    """Read the instances at ``paths`` as one volume in slice order, decoding no pixel
    before the headers show that the series fits ``limits`` (default: the defaults of
    :class:`~workers.load.limits.DecodeLimits`).

    Raises
    ------
    SeriesNotAnalysable
        When a file cannot be read or decoded, holds no greyscale image, declares
        nonsense pixel geometry, or when the instances (or the frames of the one
        multi-frame instance) do not form one regular stack of slices;
        ``SeriesTooLarge`` (a kind of it) when decoding would pass ``limits``.
    """
    if not paths:
        raise SeriesNotAnalysable("the series has no instances")
    try:
        return _load(paths, limits or DecodeLimits())
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # Values pydicom read but that do not parse (a DS of "abc", an IS of "1A"):
        # the series is what is broken, so it is refused like any other.
        raise SeriesNotAnalysable(
            f"the instances' headers cannot be interpreted ({type(exc).__name__}: {exc})"
        ) from exc


def _load(paths: Sequence[Path], limits: DecodeLimits) -> Volume:
    datasets = [read_instance(Path(path)) for path in paths]
    frame_bytes = 0
    for path, ds in zip(paths, datasets, strict=True):
        check_is_greyscale_image(Path(path), ds)
        check_identifying_uids(Path(path), ds)
        declared = check_declared_pixels(Path(path), ds, limits)
        frame_bytes = max(frame_bytes, declared.frame_bytes)
    check_one_series(datasets)
    rows, columns = matrix_size(datasets)
    multi_frame = _the_multi_frame_instance(paths, datasets)
    if multi_frame is not None:
        unit = "frame"
        slices = frame_slices(*multi_frame)
    else:
        unit = "instance"
        slices = [instance_slice(ds) for ds in datasets]
    pixel_spacing = common_pixel_spacing(slices, unit)
    phases = None if multi_frame is not None else temporal_positions(slices)
    if phases is not None:
        slices = phases[0]

    if len(slices) == 1:
        order, geometry = [0], single_slice_geometry(slices[0])
    else:
        order, geometry = stack_geometry(slices, unit)
    slices = [slices[i] for i in order]
    if phases is not None:
        phases = [[phase[i] for i in order] for phase in phases]
        for phase in phases[1:]:
            if len(phase) > 1:
                stack_geometry(phase, unit)  # the same checks for every temporal position

    # One constant for the whole series, from its first slice's header, so that
    # equal modality values stay equal across slices once inverted.
    pivot = inversion_pivot(slices[0].dataset)
    time_points = len(phases) if phases is not None else 1
    check_series_bytes(len(slices), rows, columns, time_points, limits, frame_bytes)
    voxels = np.empty((len(slices), rows, columns), dtype=np.float32)
    if multi_frame is not None:
        decode_frames(*multi_frame, slices, voxels, pivot)
    else:
        for index, piece in enumerate(slices):
            decode_instance(piece, index, voxels[index], pivot)
    timepoints = None if phases is None else _decode_time_points(phases, voxels, pivot)
    _drop_pixel_data(datasets)

    origin, row_direction, column_direction, slice_direction, slice_spacing = geometry
    return Volume(
        voxels=voxels,
        spacing=(slice_spacing, pixel_spacing[0], pixel_spacing[1]),
        origin=origin,
        row_direction=row_direction,
        column_direction=column_direction,
        slice_direction=slice_direction,
        datasets=[piece.dataset for piece in slices],
        frame_numbers=[int(piece.frame or 1) for piece in slices] if multi_frame else None,
        timepoints=timepoints,
        slice_times=None if phases is None else slice_timing(phases),
    )


def _the_multi_frame_instance(
    paths: Sequence[Path], datasets: Sequence[Dataset]
) -> tuple[Path, Dataset] | None:
    """The series' one multi-frame instance, None for single-frame images.

    Refuses a series mixing a multi-frame instance with other instances.
    """
    multi_frame = [
        (Path(path), ds) for path, ds in zip(paths, datasets, strict=True) if is_multi_frame(ds)
    ]
    if multi_frame and len(datasets) > 1:
        described = ", ".join(describe(path, ds) for path, ds in multi_frame[:3])
        raise SeriesNotAnalysable(
            f"the series holds {len(datasets)} instances of which {len(multi_frame)} "
            f"multi-frame ({described}{', ...' if len(multi_frame) > 3 else ''}): only a "
            "series of single-frame images or a single multi-frame instance can be analysed"
        )
    return multi_frame[0] if multi_frame else None


def _decode_time_points(
    phases: Sequence[Sequence[Slice]], first: np.ndarray, pivot: float | None
) -> np.ndarray:
    """Every temporal position of a 4D series, (time, slices, rows, columns); the first
    is ``first``, already decoded."""
    timepoints = np.empty((len(phases), *first.shape), dtype=np.float32)
    timepoints[0] = first
    for time, phase in enumerate(phases[1:], start=1):
        for index, piece in enumerate(phase):
            decode_instance(piece, index, timepoints[time, index], pivot)
    return timepoints


def _drop_pixel_data(datasets: Sequence[Dataset]) -> None:
    """Later steps need the headers only (highdicom reads metadata, never the source
    pixels), so the decoded copy is the only one kept."""
    for ds in datasets:
        for keyword in PIXEL_DATA_KEYWORDS:
            if keyword in ds:
                delattr(ds, keyword)
