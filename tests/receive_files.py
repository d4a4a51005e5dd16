"""Files for the receive tests and benchmark, written by streaming (never whole in memory):
small CT instances, an instance of any size, and a Deflated "bomb"."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

CHUNK = 1 << 20


def header(sop_uid: str | None = None, **attributes: object) -> Dataset:
    """A CT instance's identifying header, no pixel data."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.PatientName = "Doe^John"
    ds.PatientID = "P1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = 1
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _meta(ds: Dataset, syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta)
    return buffer.getvalue()


def _pixel_header(rows: int, columns: int, frames: int) -> tuple[Dataset, bytes]:
    """Image pixel attributes and the (7FE0,0010) OW element header for their data."""
    ds = Dataset()
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    length = rows * columns * 2 * frames
    return ds, struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length)


def write_instance(path: Path, ds: Dataset, pixel_bytes: int, fill: bytes = b"\x01") -> int:
    """An Explicit VR Little Endian instance with about ``pixel_bytes`` of pixel data,
    written in 1 MiB chunks; returns the file's size."""
    side = 512 if pixel_bytes >= 512 * 512 * 2 else max(2, int((pixel_bytes // 2) ** 0.5))
    frames = max(1, pixel_bytes // (side * side * 2))
    pixels, element = _pixel_header(side, side, frames) if pixel_bytes else (Dataset(), b"")
    full = Dataset()
    full.update(ds)
    full.update(pixels)
    length = side * side * 2 * frames if pixel_bytes else 0
    with path.open("wb") as out:
        out.write(_meta(ds, ExplicitVRLittleEndian))
        out.write(_encoded(full))
        out.write(element)
        block = fill * CHUNK
        left = length
        while left:
            out.write(block[: min(left, CHUNK)])
            left -= min(left, CHUNK)
    return path.stat().st_size


def write_deflate_bomb(path: Path, ds: Dataset, inflated_bytes: int) -> int:
    """A Deflated Explicit VR Little Endian instance whose data set inflates to about
    ``inflated_bytes`` (zeros compress ~1000:1); returns the file's size."""
    frames = max(1, inflated_bytes // (512 * 512 * 2))
    pixels, element = _pixel_header(512, 512, frames)
    full = Dataset()
    full.update(ds)
    full.update(pixels)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as out:
        out.write(_meta(ds, DeflatedExplicitVRLittleEndian))
        out.write(deflater.compress(_encoded(full) + element))
        zeros = bytes(CHUNK)
        left = 512 * 512 * 2 * frames
        while left:
            out.write(deflater.compress(zeros[: min(left, CHUNK)]))
            left -= min(left, CHUNK)
        out.write(deflater.flush())
    return path.stat().st_size
