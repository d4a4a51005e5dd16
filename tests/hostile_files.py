"""Hostile image files: tiny JPEG-LS CT instances that declare huge images.

The codestreams are real (CharLS, through pyjpegls): a blank 8192x8192 16-bit image
codes to about 1 KB, one run per line. ``claiming`` rewrites a codestream's frame
header (SOF55) to declare another size, as a hostile sender could.
"""

from __future__ import annotations

import struct
from pathlib import Path

import jpeg_ls
import numpy as np
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from tests.factories import make_ct_series


def blank_codestream(rows: int, columns: int) -> bytes:
    """A real JPEG-LS codestream of a blank 16-bit image of ``rows`` x ``columns``."""
    return bytes(jpeg_ls.encode(np.zeros((rows, columns), dtype=np.uint16)))


def claiming(stream: bytes, rows: int, columns: int) -> bytes:
    """``stream`` with its SOF55 frame header claiming ``rows`` x ``columns``."""
    at = stream.index(b"\xff\xf7")
    return stream[: at + 5] + struct.pack(">HH", rows, columns) + stream[at + 9 :]


def jpeg_ls_ct(folder: Path, rows: int, columns: int, stream: bytes, name: str = "hostile") -> Path:
    """One CT instance (its own series, described ``name``) declaring ``rows`` x
    ``columns``, whose pixel data is ``stream``, written as ``folder/<name>.dcm``."""
    (ds,) = make_ct_series(np.zeros((1, 4, 4), dtype=np.float32), series_description=name)
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
