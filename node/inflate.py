"""Reading the header of a Deflated Explicit VR Little Endian instance, with a cap.

pydicom inflates a deflated data set whole, in memory, before parsing it: one small
upload could claim gigabytes. Here the data set is inflated in bounded chunks into
an unnamed temporary file beside the spool (gone even after a crash), counting as
it goes; past ``cap`` bytes it stops and refuses. The kept file stays as received.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydicom import Dataset, dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

T = TypeVar("T")
CHUNK = 1 << 20
_PREAMBLE_AND_GROUP_LENGTH = 128 + 4 + 12  # preamble, "DICM", (0002,0000) UL element


class InflatedTooLarge(Exception):
    """The data set inflates past the cap."""


def _inflate(source: Path, offset: int, target, cap: int) -> None:  # noqa: ANN001 - a binary file
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with source.open("rb") as compressed:
        compressed.seek(offset)
        while (chunk := compressed.read(CHUNK)) and not inflater.eof:
            while chunk and not inflater.eof:
                # max_length bounds what one call may produce: never the whole bomb.
                out = inflater.decompress(chunk, CHUNK)
                total += len(out)
                if total > cap:
                    raise InflatedTooLarge(f"inflated data set larger than {cap} bytes")
                target.write(out)
                chunk = inflater.unconsumed_tail
    target.write(inflater.flush())


def deflated_header(path: Path, cap: int, scratch: Path, build: Callable[[Dataset], T]) -> T:
    """``build`` applied to the header (no pixel data) of the deflated file at ``path``."""
    meta = read_file_meta_info(path)
    offset = _PREAMBLE_AND_GROUP_LENGTH + int(meta.FileMetaInformationGroupLength)
    inflated_meta = meta.copy()
    inflated_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with tempfile.TemporaryFile(dir=scratch) as inflated:
        inflated.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(inflated, inflated_meta)
        _inflate(path, offset, inflated, cap)
        inflated.seek(0)
        return build(dcmread(inflated, stop_before_pixels=True, defer_size=CHUNK))
