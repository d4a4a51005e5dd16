"""Loading a received series into a :class:`~workers.volume.Volume`.

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

Whatever it refuses it refuses with :class:`~workers.errors.SeriesNotAnalysable`
and a reason a radiologist or PACS administrator can act on; no other exception
escapes for a bad series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.datadict import dictionary_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import iter_pixels
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import DA, DT, TM

from node.uids import InvalidUID, validate_uid
from workers.errors import SeriesNotAnalysable
from workers.pixels import (
    ModalityTransform,
    colour_refusal,
    functional_groups,
    group_macro,
    inversion_pivot,
    modality_transform,
    to_modality_values,
)
from workers.volume import Volume

# Two slices closer than this along the normal are at the same position (mm).
_DUPLICATE_TOLERANCE_MM = 0.01
# A gap may differ from the median gap by this fraction, or by the absolute
# tolerance below when that is larger (DS rounding in ImagePositionPatient).
_GAP_RELATIVE_TOLERANCE = 0.01
_GAP_ABSOLUTE_TOLERANCE_MM = 0.01
# Direction cosines of two instances further apart than this are different orientations.
_ORIENTATION_TOLERANCE = 1e-3

# What tells the images of one slice position apart in a 4D series, in order of
# preference: the first that every image has and that differs between the images of
# each position orders them.
_TEMPORAL_KEYWORDS = ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionTime", "ContentTime")
_EPOCH = datetime(1970, 1, 1)

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Objects with pixel data that are not images of the patient: analysing them would
# run a model on a result (a mask, a dose grid) as if it were an acquisition.
_NOT_ACQUIRED_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation, a result rather than an image",
    "1.2.840.10008.5.1.4.1.1.66.7": "a segmentation, a result rather than an image",
    "1.2.840.10008.5.1.4.1.1.481.2": "a radiotherapy dose grid, not an image",
}

Geometry = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]


@dataclass
class _Slice:
    """One 2D image to place: a single-frame instance, or one frame of a multi-frame one.

    ``number`` names it in a refusal: the Instance Number, or the frame number.
    Geometry values are as read (None when absent) and checked later, together.
    """

    dataset: Dataset
    frame: int | None
    number: str
    position: Sequence[float] | None
    orientation: Sequence[float] | None
    pixel_spacing: tuple[float, float] | None
    thickness: object
    transform: ModalityTransform


def load_series(paths: Sequence[Path]) -> Volume:
    """Read the instances at ``paths`` as one volume in slice order.

    Raises
    ------
    SeriesNotAnalysable
        When a file cannot be read or decoded, holds no greyscale image, or when the
        instances (or the frames of the one multi-frame instance) do not form one
        regular stack of slices.
    """
    if not paths:
        raise SeriesNotAnalysable("the series has no instances")
    try:
        return _load(paths)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # Values pydicom read but that do not parse (a DS of "abc", an IS of "1A"):
        # the series is what is broken, so it is refused like any other.
        raise SeriesNotAnalysable(
            f"the instances' headers cannot be interpreted ({type(exc).__name__}: {exc})"
        ) from exc


def _load(paths: Sequence[Path]) -> Volume:
    datasets = [_read(Path(path)) for path in paths]
    for path, ds in zip(paths, datasets, strict=True):
        _check_is_greyscale_image(Path(path), ds)
        _check_identifying_uids(Path(path), ds)
    _check_one_series(datasets)
    rows, columns = _matrix_size(datasets)

    multi_frame = [
        (Path(path), ds) for path, ds in zip(paths, datasets, strict=True) if _is_multi_frame(ds)
    ]
    if multi_frame and len(datasets) > 1:
        described = ", ".join(_describe(path, ds) for path, ds in multi_frame[:3])
        raise SeriesNotAnalysable(
            f"the series holds {len(datasets)} instances of which {len(multi_frame)} "
            f"multi-frame ({described}{', ...' if len(multi_frame) > 3 else ''}): only a "
            "series of single-frame images or a single multi-frame instance can be analysed"
        )
    if multi_frame:
        unit = "frame"
        slices = _frames(*multi_frame[0])
    else:
        unit = "instance"
        slices = [_instance_slice(ds) for ds in datasets]
    pixel_spacing = _pixel_spacing(slices, unit)
    phases = None if multi_frame else _temporal_positions(slices)
    if phases is not None:
        slices = phases[0]

    if len(slices) == 1:
        order, geometry = [0], _single_slice_geometry(slices[0])
    else:
        order, geometry = _stack_geometry(slices, unit)
    slices = [slices[i] for i in order]
    if phases is not None:
        phases = [[phase[i] for i in order] for phase in phases]
        for phase in phases[1:]:
            if len(phase) > 1:
                _stack_geometry(phase, unit)  # the same checks for every temporal position

    # One constant for the whole series, from its first slice's header, so that
    # equal modality values stay equal across slices once inverted.
    pivot = inversion_pivot(slices[0].dataset)
    voxels = np.empty((len(slices), rows, columns), dtype=np.float32)
    if multi_frame:
        _decode_frames(multi_frame[0][0], multi_frame[0][1], slices, voxels, pivot)
    else:
        for index, piece in enumerate(slices):
            _decode_instance(piece, index, voxels[index], pivot)
    timepoints = slice_times = None
    if phases is not None:
        timepoints = np.empty((len(phases), *voxels.shape), dtype=np.float32)
        timepoints[0] = voxels
        for time, phase in enumerate(phases[1:], start=1):
            for index, piece in enumerate(phase):
                _decode_instance(piece, index, timepoints[time, index], pivot)
        slice_times = _slice_times(phases)
    # Later steps need the headers only (highdicom reads metadata, never the source
    # pixels), so the decoded copy above is the only one kept.
    for ds in datasets:
        for keyword in _PIXEL_DATA_KEYWORDS:
            if keyword in ds:
                delattr(ds, keyword)

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
        slice_times=slice_times,
    )


def _read(path: Path) -> Dataset:
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # Files without a PS3.10 header (as some tools write them) are still
            # DICOM; a real data set read this way has a SOP Class UID.
            ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many kinds on damaged files
        raise SeriesNotAnalysable(f"{path.name}: not a readable DICOM file ({exc})") from exc
    if "SOPClassUID" not in ds:
        raise SeriesNotAnalysable(f"{path.name}: not a DICOM file (no SOP Class UID)")
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a file read without meta information the transfer syntax it was read in.

    pydicom decodes pixels by the file meta's Transfer Syntax UID; a file without
    one (written by a tool that skips the PS3.10 header) was still read in a known
    encoding, which for native pixel data is all the decoder needs.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _describe(path: Path, ds: Dataset) -> str:
    sop_class = ds.SOPClassUID
    name = sop_class.name if sop_class.is_valid and sop_class.name != sop_class else sop_class
    return f"{path.name} ({name})"


def _frame_count(ds: Dataset) -> int:
    frames = ds.get("NumberOfFrames")
    try:
        return int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


def _is_multi_frame(ds: Dataset) -> bool:
    """Whether the frames must be placed one by one (functional groups, or several)."""
    return _frame_count(ds) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def _check_is_greyscale_image(path: Path, ds: Dataset) -> None:
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        raise SeriesNotAnalysable(
            f"{_describe(path, ds)} has no pixel data: only image series can be analysed"
        )
    not_an_image = _NOT_ACQUIRED_IMAGES.get(str(ds.SOPClassUID))
    if not_an_image is not None:
        raise SeriesNotAnalysable(f"{_describe(path, ds)} is {not_an_image}")
    colour = colour_refusal(ds)
    if colour is not None:
        raise SeriesNotAnalysable(f"{_describe(path, ds)} {colour}")
    if "Rows" not in ds or "Columns" not in ds:
        raise SeriesNotAnalysable(f"{_describe(path, ds)} has no Rows/Columns")


def _check_identifying_uids(path: Path, ds: Dataset) -> None:
    """The UIDs a result must reference are valid UIDs (the receiver checks them too).

    A SEG or SR copies the study and frame of reference and references each source
    instance: with a malformed UID in the source, no valid result could be written.
    """
    keywords = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
    if "FrameOfReferenceUID" in ds:
        keywords.append("FrameOfReferenceUID")
    for keyword in keywords:
        try:
            validate_uid(ds.get(keyword), keyword)
        except InvalidUID as exc:
            raise SeriesNotAnalysable(
                f"{_describe(path, ds)}: {exc}, so no result could reference it"
            ) from exc


def _check_one_series(datasets: Sequence[Dataset]) -> None:
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise SeriesNotAnalysable(
            f"the instances belong to {len(series)} different series; a job analyses one"
        )


def _matrix_size(datasets: Sequence[Dataset]) -> tuple[int, int]:
    sizes = Counter((int(ds.Rows), int(ds.Columns)) for ds in datasets)
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c} ({n} instances)" for (r, c), n in sizes.most_common())
        raise SeriesNotAnalysable(f"the instances have different matrix sizes: {listed}")
    return next(iter(sizes))


def _instance_slice(ds: Dataset) -> _Slice:
    return _Slice(
        dataset=ds,
        frame=None,
        number=str(ds.get("InstanceNumber", "?")),
        position=ds.get("ImagePositionPatient"),
        orientation=ds.get("ImageOrientationPatient"),
        pixel_spacing=_instance_pixel_spacing(ds),
        thickness=ds.get("SliceThickness"),
        transform=modality_transform(ds),
    )


def _frames(path: Path, ds: Dataset) -> list[_Slice]:
    """The frames of one multi-frame instance as slices, placed by their functional groups.

    Refuses an object whose frames nothing places (a cine loop, an object stripped of
    its functional groups) and one holding several stacks.
    """
    count = _frame_count(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        raise SeriesNotAnalysable(
            f"{_describe(path, ds)} is a multi-frame image of {count} frames without "
            "Per-Frame Functional Groups: nothing places its frames in space (a cine "
            "loop, or an enhanced object stripped of its functional groups?); only "
            "multi-frame images that position every frame (enhanced or legacy converted "
            "enhanced CT/MR) can be analysed"
        )
    if len(per_frame) != count:
        raise SeriesNotAnalysable(
            f"{_describe(path, ds)} declares {count} frames but describes "
            f"{len(per_frame)} in its Per-Frame Functional Groups"
        )

    slices = []
    stacks: Counter[str] = Counter()
    for frame in range(1, count + 1):
        groups = functional_groups(ds, frame)
        content = group_macro(groups, "FrameContentSequence")
        if content is not None and content.get("StackID") not in (None, ""):
            stacks[str(content.StackID)] += 1
        position = group_macro(groups, "PlanePositionSequence")
        orientation = group_macro(groups, "PlaneOrientationSequence")
        measures = group_macro(groups, "PixelMeasuresSequence") or Dataset()
        spacing = _instance_pixel_spacing(measures) or _instance_pixel_spacing(ds)
        thickness = measures.get("SliceThickness") or measures.get("SpacingBetweenSlices")
        slices.append(
            _Slice(
                dataset=ds,
                frame=frame,
                number=str(frame),
                position=position.get("ImagePositionPatient") if position else None,
                orientation=orientation.get("ImageOrientationPatient") if orientation else None,
                pixel_spacing=spacing,
                thickness=thickness or ds.get("SliceThickness"),
                transform=modality_transform(ds, groups),
            )
        )
    if len(stacks) > 1:
        listed = ", ".join(f"{stack} ({n} frames)" for stack, n in sorted(stacks.items()))
        raise SeriesNotAnalysable(
            f"{_describe(path, ds)} holds {len(stacks)} stacks of frames (Stack ID "
            f"{listed}): a job analyses one stack of parallel slices"
        )
    return slices


def _pixel_spacing(slices: Sequence[_Slice], unit: str) -> tuple[float, float]:
    values = {piece.pixel_spacing for piece in slices}
    if len(values) > 1:
        listed = ", ".join(
            "none" if v is None else f"{v[0]}x{v[1]} mm" for v in sorted(values, key=str)
        )
        raise SeriesNotAnalysable(f"the {unit}s have different pixel spacings: {listed}")
    spacing = values.pop()
    if spacing is None:
        if len(slices) > 1:
            raise SeriesNotAnalysable(
                f"the {unit}s have no valid PixelSpacing, so the slices cannot be placed in mm"
            )
        return (1.0, 1.0)
    return spacing


def _instance_pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing (projection images), when positive."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            row, column = (round(float(v), 6) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0:
            return (row, column)
    return None


def _directions(piece: _Slice, orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
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


def _single_slice_geometry(piece: _Slice) -> Geometry:
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


def _stack_geometry(slices: Sequence[_Slice], unit: str) -> tuple[list[int], Geometry]:
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

    duplicate = np.flatnonzero(gaps < _DUPLICATE_TOLERANCE_MM)
    if duplicate.size:
        first = int(duplicate[0])
        numbers = [slices[int(order[first + k])].number for k in (0, 1)]
        hint = _dimensions_hint(slices[0].dataset) if unit == "frame" else ""
        raise SeriesNotAnalysable(
            f"duplicate slice positions: {unit}s {numbers[0]} and {numbers[1]} both lie "
            f"at {along[first]:.2f} mm along the slice normal ({duplicate.size} duplicate(s) "
            f"in all){hint}"
        )

    spacing = float(np.median(gaps))
    tolerance = max(_GAP_RELATIVE_TOLERANCE * spacing, _GAP_ABSOLUTE_TOLERANCE_MM)
    irregular = np.flatnonzero(np.abs(gaps - spacing) > tolerance)
    if irregular.size:
        at = int(irregular[np.argmax(np.abs(gaps[irregular] - spacing))])
        hint = " (a missing slice?)" if gaps[at] > spacing else ""
        raise SeriesNotAnalysable(
            f"slice spacing is not uniform: a gap of {gaps[at]:.3f} mm between slices at "
            f"{along[at]:.2f} and {along[at + 1]:.2f} mm along the normal, where the "
            f"spacing is {spacing:.3f} mm{hint}"
        )

    # Slices must stack straight along the normal: an in-plane step from slice to
    # slice means a sheared volume (gantry tilt), which this node does not resample.
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

    return [int(i) for i in order], (positions[0], row, column, normal, spacing)


def _temporal_positions(slices: Sequence[_Slice]) -> list[list[_Slice]] | None:
    """The images of a 4D series by temporal position (each in the input's slice
    order), or None when no slice position repeats or nothing tells the images of a
    repeated position apart (left to the geometry checks, which refuse duplicates).

    Refuses a 4D series whose positions have different numbers of temporal positions.
    """
    groups: dict[tuple[int, ...], list[_Slice]] = {}
    for piece in slices:
        position = piece.position
        if position is None or len(position) != 3:
            return None
        key = tuple(round(float(v) / _DUPLICATE_TOLERANCE_MM) for v in position)
        groups.setdefault(key, []).append(piece)
    if all(len(group) == 1 for group in groups.values()):
        return None
    for keyword in _TEMPORAL_KEYWORDS:
        values = [[_temporal_value(p.dataset, keyword) for p in g] for g in groups.values()]
        if all(None not in v and len(set(v)) == len(v) for v in values):
            break
    else:
        return None

    counts = Counter(len(group) for group in groups.values())
    if len(counts) > 1:
        usual, _ = counts.most_common(1)[0]
        odd = next(g for g in groups.values() if len(g) != usual)
        at = ", ".join(f"{float(v):g}" for v in odd[0].position or ())
        listed = ", ".join(
            f"{n} position(s) with {count}" for count, n in sorted(counts.items(), reverse=True)
        )
        raise SeriesNotAnalysable(
            f"a 4D series (slice positions repeated, told apart by {keyword}) must have "
            f"the same number of temporal positions at every slice position: {listed} "
            f"(e.g. {len(odd)} at ({at}) mm, instance(s) "
            f"{', '.join(p.number for p in odd[:5])}); an incomplete dynamic acquisition, "
            "or a duplicated slice?"
        )
    ordered = [
        [group[i] for i in sorted(range(len(group)), key=value.__getitem__)]
        for group, value in zip(groups.values(), values, strict=True)
    ]
    if keyword == "TemporalPositionIdentifier":
        expected = sorted(values[0])
        for group, value in zip(ordered, values, strict=True):
            if sorted(value) != expected:
                raise SeriesNotAnalysable(
                    f"a 4D series must have the same temporal positions at every slice "
                    f"position: instance {group[0].number} has TemporalPositionIdentifier "
                    f"{sorted(value)} where instance {ordered[0][0].number} has {expected}"
                )
    return [[group[time] for group in ordered] for time in range(len(ordered[0]))]


def _temporal_value(ds: Dataset, keyword: str) -> float | None:
    """The value of ``keyword`` that orders ``ds`` in time (times as seconds)."""
    if keyword == "AcquisitionTime":
        return _acquired_seconds(ds)
    if keyword == "ContentTime":
        return _seconds(ds.get("ContentDate"), ds.get("ContentTime"))
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _acquired_seconds(ds: Dataset) -> float | None:
    """When ``ds`` was acquired, in seconds: AcquisitionDateTime, else AcquisitionDate
    and AcquisitionTime (AcquisitionTime alone: seconds into its day)."""
    moment = ds.get("AcquisitionDateTime")
    if moment not in (None, ""):
        try:
            parsed = DT(str(moment))
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is not None:
                parsed = parsed.astimezone(UTC).replace(tzinfo=None)
            return (parsed - _EPOCH).total_seconds()
    return _seconds(ds.get("AcquisitionDate"), ds.get("AcquisitionTime"))


def _seconds(date: object, time: object) -> float | None:
    if time in (None, ""):
        return None
    try:
        clock = TM(str(time))
        day = DA(str(date)) if date not in (None, "") else None
    except ValueError:
        return None
    if clock is None:
        return None
    seconds = clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6
    if day is not None:
        seconds += (datetime(day.year, day.month, day.day) - _EPOCH).total_seconds()
    return seconds


def _slice_times(phases: Sequence[Sequence[_Slice]]) -> np.ndarray | None:
    """(time, slices) seconds after the series' first image, or None when unknown.

    Each image's own acquisition time (AcquisitionDateTime, or AcquisitionDate and
    AcquisitionTime) when every image has one and every slice's times increase over
    the temporal positions: that is the per-slice timing slice-timing correction
    needs. Otherwise, TemporalPositionIdentifier times FrameTime or TemporalResolution
    (ms): one time per temporal position, shared by all its slices, so slice-timing
    correction has nothing to shift.
    """
    acquired = [[_acquired_seconds(p.dataset) for p in phase] for phase in phases]
    if all(None not in row for row in acquired):
        times = np.asarray(acquired, dtype=np.float64)
        if np.all(np.diff(times, axis=0) > 0):
            return times - times.min()
    first = phases[0][0].dataset
    interval = None
    for keyword in ("FrameTime", "TemporalResolution"):
        value = _temporal_value(first, keyword)
        if value is not None and value > 0:
            interval = value / 1000.0
            break
    identifiers = [
        [_temporal_value(p.dataset, "TemporalPositionIdentifier") for p in phase]
        for phase in phases
    ]
    if interval is None or not all(None not in row for row in identifiers):
        return None
    numbers = np.asarray(identifiers, dtype=np.float64)
    if not np.all(np.diff(numbers, axis=0) > 0):
        return None
    return (numbers - numbers.min()) * interval


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


def _decode_instance(piece: _Slice, index: int, out: np.ndarray, pivot: float | None) -> None:
    """Decode one single-frame slice into ``out`` in modality values."""
    ds = piece.dataset
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise many kinds (missing plugin, corrupt stream)
        raise SeriesNotAnalysable(
            f"cannot decode the pixel data of slice {index + 1} (instance "
            f"{ds.get('InstanceNumber', '?')}, transfer syntax "
            f"{_transfer_syntax_name(ds)}): {exc}"
        ) from exc
    if stored.shape != out.shape:
        raise SeriesNotAnalysable(
            f"instance {ds.get('InstanceNumber', '?')} decodes to shape {stored.shape}, "
            f"not one greyscale frame of {out.shape[0]}x{out.shape[1]}"
        )
    to_modality_values(stored, piece.transform, out, pivot)


def _decode_frames(
    path: Path,
    ds: Dataset,
    slices: Sequence[_Slice],
    voxels: np.ndarray,
    pivot: float | None,
) -> None:
    """Decode every frame of one multi-frame instance into its slice of ``voxels``.

    Frames are decoded one at a time, in file order, so that a large object never
    holds all its stored frames and all its float32 slices at once.
    """
    slot = {piece.frame: index for index, piece in enumerate(slices)}
    frame = 0
    try:
        for frame, stored in enumerate(iter_pixels(ds), start=1):
            index = slot.get(frame)
            if index is None:
                continue
            if stored.shape != voxels.shape[1:]:
                raise SeriesNotAnalysable(
                    f"frame {frame} of {_describe(path, ds)} decodes to shape "
                    f"{stored.shape}, not one greyscale frame of "
                    f"{voxels.shape[1]}x{voxels.shape[2]}"
                )
            to_modality_values(stored, slices[index].transform, voxels[index], pivot)
    except SeriesNotAnalysable:
        raise
    except Exception as exc:  # decoders raise many kinds (missing plugin, corrupt stream)
        raise SeriesNotAnalysable(
            f"cannot decode frame {frame + 1} of {_describe(path, ds)} (transfer syntax "
            f"{_transfer_syntax_name(ds)}): {exc}"
        ) from exc
    if frame < len(slices):
        raise SeriesNotAnalysable(
            f"{_describe(path, ds)} holds pixel data for {frame} of its {len(slices)} frames"
        )


def _transfer_syntax_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return uid.name if uid is not None else "unknown"
