"""Reading a series' files and the checks made on each instance before any geometry.

This module owns turning a path into a :class:`~pydicom.Dataset` (with or without a
PS3.10 header) and refusing, with :class:`~workers.errors.SeriesNotAnalysable`, what
is not one series of greyscale images with valid identifying UIDs and one matrix
size. It also names instances and transfer syntaxes in refusals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.uids import InvalidUID, validate_uid
from workers.errors import SeriesNotAnalysable
from workers.pixels import colour_refusal

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Values larger than this are read from the file only when used: a data set's pixel data
# stays on disk until its declared size has been checked (workers.load.limits).
_DEFER_BYTES = 64 * 1024
# Objects with pixel data that are not images of the patient: analysing them would
# run a model on a result (a mask, a dose grid) as if it were an acquisition.
_NOT_ACQUIRED_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation, a result rather than an image",
    "1.2.840.10008.5.1.4.1.1.66.7": "a segmentation, a result rather than an image",
    "1.2.840.10008.5.1.4.1.1.481.2": "a radiotherapy dose grid, not an image",
}


def read_instance(path: Path) -> Dataset:
    try:
        try:
            ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
        except InvalidDicomError:
            # Files without a PS3.10 header (as some tools write them) are still
            # DICOM; a real data set read this way has a SOP Class UID.
            ds = pydicom.dcmread(path, force=True, defer_size=_DEFER_BYTES)
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


def describe(path: Path, ds: Dataset) -> str:
    sop_class = ds.SOPClassUID
    name = sop_class.name if sop_class.is_valid and sop_class.name != sop_class else sop_class
    return f"{path.name} ({name})"


def frame_count(ds: Dataset) -> int:
    frames = ds.get("NumberOfFrames")
    try:
        return int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


def is_multi_frame(ds: Dataset) -> bool:
    """Whether the frames must be placed one by one (functional groups, or several)."""
    return frame_count(ds) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def check_is_greyscale_image(path: Path, ds: Dataset) -> None:
    if not any(keyword in ds for keyword in PIXEL_DATA_KEYWORDS):
        raise SeriesNotAnalysable(
            f"{describe(path, ds)} has no pixel data: only image series can be analysed"
        )
    not_an_image = _NOT_ACQUIRED_IMAGES.get(str(ds.SOPClassUID))
    if not_an_image is not None:
        raise SeriesNotAnalysable(f"{describe(path, ds)} is {not_an_image}")
    colour = colour_refusal(ds)
    if colour is not None:
        raise SeriesNotAnalysable(f"{describe(path, ds)} {colour}")
    if "Rows" not in ds or "Columns" not in ds:
        raise SeriesNotAnalysable(f"{describe(path, ds)} has no Rows/Columns")


def check_identifying_uids(path: Path, ds: Dataset) -> None:
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
                f"{describe(path, ds)}: {exc}, so no result could reference it"
            ) from exc


def check_one_series(datasets: Sequence[Dataset]) -> None:
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise SeriesNotAnalysable(
            f"the instances belong to {len(series)} different series; a job analyses one"
        )


def matrix_size(datasets: Sequence[Dataset]) -> tuple[int, int]:
    sizes = Counter((int(ds.Rows), int(ds.Columns)) for ds in datasets)
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c} ({n} instances)" for (r, c), n in sizes.most_common())
        raise SeriesNotAnalysable(f"the instances have different matrix sizes: {listed}")
    return next(iter(sizes))


def transfer_syntax_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return uid.name if uid is not None else "unknown"
