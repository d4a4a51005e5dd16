"""Placing slices in patient space: the geometry of one stack.

This module owns ordering slices along their normal and refusing a stack that is not
one regular volume (missing or differing orientations, duplicate positions, uneven
gaps, gantry tilt), and the geometry of a lone slice. It returns the order and the
:data:`Geometry` (origin, row, column and slice directions, slice spacing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset
from pydicom.datadict import dictionary_keyword

from workers.errors import SeriesNotAnalysable
from workers.load.slices import Slice

# Two slices closer than this along the normal are at the same position (mm).
DUPLICATE_TOLERANCE_MM = 0.01
# A gap may differ from the median gap by this fraction, or by the absolute
# tolerance below when that is larger (DS rounding in ImagePositionPatient).
_GAP_RELATIVE_TOLERANCE = 0.01
_GAP_ABSOLUTE_TOLERANCE_MM = 0.01
# Direction cosines of two instances further apart than this are different orientations.
_ORIENTATION_TOLERANCE = 1e-3
_DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

Geometry = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]


def _directions(piece: Slice, orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray([float(v) for v in orientation], dtype=np.float64)
    row, column = values[:3], values[3:]
    row_norm, column_norm = np.linalg.norm(row), np.linalg.norm(column)
    if (
        values.shape != (6,)
        or row_norm < 0.5
        or column_norm < 0.5
        or abs(np.dot(row / row_norm, column / column_norm)) > 0.01
    ):
        what = "frame" if piece.frame is not None else "instance"
        raise SeriesNotAnalysable(
            f"invalid ImageOrientationPatient {list(orientation)} in {what} "
            f"{piece.number}: not two orthogonal unit vectors"
        )
    return row / row_norm, column / column_norm


def single_slice_geometry(piece: Slice) -> Geometry:
    orientation = piece.orientation or _DEFAULT_ORIENTATION
    if len(orientation) != 6:
        orientation = _DEFAULT_ORIENTATION
    row, column = _directions(piece, orientation)
    position = piece.position
    origin = (
        np.asarray([float(v) for v in position], dtype=np.float64)
        if position and len(position) == 3
        else np.zeros(3)
    )
    try:
        spacing = float(piece.thickness) if piece.thickness not in (None, "") else 1.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        spacing = 1.0
    return origin, row, column, np.cross(row, column), spacing if spacing > 0 else 1.0


def stack_geometry(slices: Sequence[Slice], unit: str) -> tuple[list[int], Geometry]:
    missing = [
        piece.number
        for piece in slices
        if len(piece.position or ()) != 3 or len(piece.orientation or ()) != 6
    ]
    if missing:
        raise SeriesNotAnalysable(
            f"{len(missing)} of {len(slices)} {unit}s lack ImagePositionPatient or "
            f"ImageOrientationPatient ({unit} numbers {', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}): the slices cannot be ordered"
        )
    orientations = np.asarray(
        [[float(v) for v in piece.orientation or ()] for piece in slices], dtype=np.float64
    )
    positions = np.asarray(
        [[float(v) for v in piece.position or ()] for piece in slices], dtype=np.float64
    )
    deviation = np.abs(orientations - orientations[0]).max(axis=1)
    if deviation.max() > _ORIENTATION_TOLERANCE:
        groups = Counter(tuple(round(v, 3) for v in orientation) for orientation in orientations)
        listed = "; ".join(f"{list(o)} ({n} {unit}s)" for o, n in groups.most_common(3))
        hint = (
            "several stacks in one object?"
            if unit == "frame"
            else "a localizer or a reformat mixed into the series?"
        )
        raise SeriesNotAnalysable(f"the {unit}s have different orientations: {listed} ({hint})")
    row, column = _directions(slices[0], orientations[0])
    normal = np.cross(row, column)

    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    gaps = np.diff(along)
    _check_no_duplicates(slices, unit, order, along, gaps)
    spacing = float(np.median(gaps))
    tolerance = max(_GAP_RELATIVE_TOLERANCE * spacing, _GAP_ABSOLUTE_TOLERANCE_MM)
    _check_even_gaps(along, gaps, spacing, tolerance)
    _check_not_sheared(positions, normal, gaps, tolerance)
    return [int(i) for i in order], (positions[0], row, column, normal, spacing)


def _check_no_duplicates(
    slices: Sequence[Slice],
    unit: str,
    order: np.ndarray,
    along: np.ndarray,
    gaps: np.ndarray,
) -> None:
    duplicate = np.flatnonzero(gaps < DUPLICATE_TOLERANCE_MM)
    if duplicate.size:
        first = int(duplicate[0])
        numbers = [slices[int(order[first + k])].number for k in (0, 1)]
        hint = _dimensions_hint(slices[0].dataset) if unit == "frame" else ""
        raise SeriesNotAnalysable(
            f"duplicate slice positions: {unit}s {numbers[0]} and {numbers[1]} both lie "
            f"at {along[first]:.2f} mm along the slice normal ({duplicate.size} duplicate(s) "
            f"in all){hint}"
        )


def _check_even_gaps(along: np.ndarray, gaps: np.ndarray, spacing: float, tolerance: float) -> None:
    irregular = np.flatnonzero(np.abs(gaps - spacing) > tolerance)
    if irregular.size:
        at = int(irregular[np.argmax(np.abs(gaps[irregular] - spacing))])
        hint = " (a missing slice?)" if gaps[at] > spacing else ""
        raise SeriesNotAnalysable(
            f"slice spacing is not uniform: a gap of {gaps[at]:.3f} mm between slices at "
            f"{along[at]:.2f} and {along[at + 1]:.2f} mm along the normal, where the "
            f"spacing is {spacing:.3f} mm{hint}"
        )


def _check_not_sheared(
    positions: np.ndarray, normal: np.ndarray, gaps: np.ndarray, tolerance: float
) -> None:
    """Slices must stack straight along the normal: an in-plane step from slice to
    slice means a sheared volume (gantry tilt), which this node does not resample."""
    steps = np.diff(positions, axis=0)
    in_plane = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
    if in_plane.max() > tolerance:
        at = int(np.argmax(in_plane))
        angle = np.degrees(np.arctan2(in_plane[at], gaps[at]))
        raise SeriesNotAnalysable(
            f"the slices are not stacked along their normal: each is shifted "
            f"{in_plane[at]:.2f} mm in-plane from the previous one, a tilt of {angle:.1f} "
            "degrees (gantry tilt?); sheared volumes are not supported"
        )


def _dimensions_hint(ds: Dataset) -> str:
    """What a multi-frame object says its frames vary over, to explain stacked duplicates.

    Frames sharing positions are several echoes, phases, b-values or acquisitions of
    the same slices; the Dimension Index Sequence names which.
    """
    names = []
    for item in ds.get("DimensionIndexSequence") or ():
        label = item.get("DimensionDescriptionLabel")
        pointer = item.get("DimensionIndexPointer")
        if not label and pointer is not None:
            try:
                label = dictionary_keyword(pointer)
            except KeyError:
                label = str(pointer)
        if label:
            names.append(str(label))
    listed = f"; its frames vary over: {', '.join(names)}" if names else ""
    return (
        " (frames of several echoes, phases, b-values or acquisitions at the same "
        f"positions?{listed}): a job analyses one volume of distinct slices"
    )
