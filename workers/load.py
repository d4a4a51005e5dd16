"""Loading a received series into a :class:`~workers.volume.Volume`.

This module owns the decision whether a series can be analysed at all. It reads the
instances, decodes their pixels (any transfer syntax pydicom's installed plugins
decode), sorts the slices along the slice normal, applies the modality rescale, and
checks the geometry. Whatever it refuses it refuses with
:class:`~workers.errors.SeriesNotAnalysable` and a reason a radiologist or PACS
administrator can act on; no other exception escapes for a bad series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from workers.errors import SeriesNotAnalysable
from workers.volume import Volume

# Two slices closer than this along the normal are at the same position (mm).
_DUPLICATE_TOLERANCE_MM = 0.01
# A gap may differ from the median gap by this fraction, or by the absolute
# tolerance below when that is larger (DS rounding in ImagePositionPatient).
_GAP_RELATIVE_TOLERANCE = 0.01
_GAP_ABSOLUTE_TOLERANCE_MM = 0.01
# Direction cosines of two instances further apart than this are different orientations.
_ORIENTATION_TOLERANCE = 1e-3

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def load_series(paths: Sequence[Path]) -> Volume:
    """Read the instances at ``paths`` as one volume in slice order.

    Raises
    ------
    SeriesNotAnalysable
        When a file cannot be read or decoded, holds no image, is multi-frame, or
        when the instances do not form one regular stack of slices.
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
        _check_is_single_frame_image(Path(path), ds)
    _check_one_series(datasets)
    rows, columns = _matrix_size(datasets)
    pixel_spacing = _pixel_spacing(datasets)

    if len(datasets) == 1:
        order, geometry = [0], _single_slice_geometry(datasets[0])
    else:
        order, geometry = _stack_geometry(datasets)
    datasets = [datasets[i] for i in order]

    voxels = np.empty((len(datasets), rows, columns), dtype=np.float32)
    for index, ds in enumerate(datasets):
        _modality_values(ds, index, voxels[index])
        # Later steps need the headers only (highdicom reads metadata, never the
        # source pixels), so the decoded copy above is the only one kept.
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
        datasets=datasets,
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


def _check_is_single_frame_image(path: Path, ds: Dataset) -> None:
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        raise SeriesNotAnalysable(
            f"{_describe(path, ds)} has no pixel data: only image series can be analysed"
        )
    frames = ds.get("NumberOfFrames")
    try:
        frame_count = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        frame_count = 1
    if frame_count > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        raise SeriesNotAnalysable(
            f"{_describe(path, ds)} is a multi-frame object with {frame_count} frame(s): "
            "only series of single-frame images are supported for now"
        )
    photometric = str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or not photometric.startswith("MONOCHROME"):
        raise SeriesNotAnalysable(
            f"{_describe(path, ds)} is a colour image "
            f"({ds.get('PhotometricInterpretation', 'unknown')}): only greyscale images "
            "can be analysed"
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise SeriesNotAnalysable(f"{_describe(path, ds)} has no Rows/Columns")


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


def _pixel_spacing(datasets: Sequence[Dataset]) -> tuple[float, float]:
    values = {_instance_pixel_spacing(ds) for ds in datasets}
    if len(values) > 1:
        listed = ", ".join(
            "none" if v is None else f"{v[0]}x{v[1]} mm" for v in sorted(values, key=str)
        )
        raise SeriesNotAnalysable(f"the instances have different pixel spacings: {listed}")
    spacing = values.pop()
    if spacing is None:
        if len(datasets) > 1:
            raise SeriesNotAnalysable(
                "the instances have no valid PixelSpacing, so the slices cannot be placed in mm"
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


def _directions(ds: Dataset, orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray([float(v) for v in orientation], dtype=np.float64)
    row, column = values[:3], values[3:]
    row_norm, column_norm = np.linalg.norm(row), np.linalg.norm(column)
    if (
        values.shape != (6,)
        or row_norm < 0.5
        or column_norm < 0.5
        or abs(np.dot(row / row_norm, column / column_norm)) > 0.01
    ):
        raise SeriesNotAnalysable(
            f"invalid ImageOrientationPatient {list(orientation)} in instance "
            f"{ds.get('InstanceNumber', '?')}: not two orthogonal unit vectors"
        )
    return row / row_norm, column / column_norm


def _single_slice_geometry(
    ds: Dataset,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    orientation = ds.get("ImageOrientationPatient") or _DEFAULT_ORIENTATION
    if len(orientation) != 6:
        orientation = _DEFAULT_ORIENTATION
    row, column = _directions(ds, orientation)
    position = ds.get("ImagePositionPatient")
    origin = (
        np.asarray([float(v) for v in position], dtype=np.float64)
        if position and len(position) == 3
        else np.zeros(3)
    )
    thickness = ds.get("SliceThickness")
    try:
        spacing = float(thickness) if thickness not in (None, "") else 1.0
    except (TypeError, ValueError):
        spacing = 1.0
    return origin, row, column, np.cross(row, column), spacing if spacing > 0 else 1.0


def _stack_geometry(
    datasets: Sequence[Dataset],
) -> tuple[list[int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]]:
    missing = [
        str(ds.get("InstanceNumber", "?"))
        for ds in datasets
        if len(ds.get("ImagePositionPatient") or ()) != 3
        or len(ds.get("ImageOrientationPatient") or ()) != 6
    ]
    if missing:
        raise SeriesNotAnalysable(
            f"{len(missing)} of {len(datasets)} instances lack ImagePositionPatient or "
            f"ImageOrientationPatient (instance numbers {', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}): the slices cannot be ordered"
        )
    orientations = np.asarray(
        [[float(v) for v in ds.ImageOrientationPatient] for ds in datasets], dtype=np.float64
    )
    positions = np.asarray(
        [[float(v) for v in ds.ImagePositionPatient] for ds in datasets], dtype=np.float64
    )
    deviation = np.abs(orientations - orientations[0]).max(axis=1)
    if deviation.max() > _ORIENTATION_TOLERANCE:
        groups = Counter(
            tuple(round(v, 3) for v in orientation) for orientation in orientations
        )
        listed = "; ".join(f"{list(o)} ({n} instances)" for o, n in groups.most_common(3))
        raise SeriesNotAnalysable(
            f"the instances have different orientations: {listed} (a localizer or a "
            "reformat mixed into the series?)"
        )
    row, column = _directions(datasets[0], orientations[0])
    normal = np.cross(row, column)

    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    gaps = np.diff(along)

    duplicate = np.flatnonzero(gaps < _DUPLICATE_TOLERANCE_MM)
    if duplicate.size:
        first = int(duplicate[0])
        numbers = [datasets[int(order[first + k])].get("InstanceNumber", "?") for k in (0, 1)]
        raise SeriesNotAnalysable(
            f"duplicate slice positions: instances {numbers[0]} and {numbers[1]} both lie "
            f"at {along[first]:.2f} mm along the slice normal ({duplicate.size} duplicate(s) "
            "in all)"
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


def _modality_values(ds: Dataset, index: int, out: np.ndarray) -> None:
    """Decode one slice into ``out`` in modality units (rescale or modality LUT applied)."""
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
    if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
        out[...] = apply_modality_lut(stored, ds)
        return
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    out[...] = stored
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)


def _transfer_syntax_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return uid.name if uid is not None else "unknown"
