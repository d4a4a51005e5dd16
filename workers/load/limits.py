"""What decoding may cost, checked from the headers before any pixel is decoded.

This module owns refusing an instance or a series whose pixels cannot be decoded
within the node's memory bounds (:class:`DecodeLimits`), or whose declared geometry is
nonsense, before a decoder allocates anything. A file of a few kilobytes may declare
a 65535x65535 image: decoders allocate what the header (or the codestream's own
frame header) declares, so the declaration is what must be checked:

- Rows, Columns, Samples per Pixel, Bits Allocated and Number of Frames must be
  values a decoder can honour (Bits Allocated 1, 8, 16, 32 or 64);
- one decoded frame must fit ``DecodeLimits.frame_bytes`` and the decoded series
  (float32 voxels, every temporal position) ``DecodeLimits.series_bytes``;
- native pixel data must hold at least the bytes its header declares;
- a compressed frame's codestream (JPEG, JPEG-LS, JPEG 2000) must declare the size
  the data set declares, since its decoder allocates by the codestream.

Refusals are :class:`~workers.errors.SeriesTooLarge` (over a limit) or
:class:`~workers.errors.SeriesNotAnalysable` (nonsense), naming the instance.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.datadict import dictionary_description
from pydicom.encaps import generate_fragmented_frames
from pydicom.tag import Tag

from workers.errors import SeriesNotAnalysable, SeriesTooLarge
from workers.load.files import PIXEL_DATA_KEYWORDS, describe

MiB = 1024**2
GiB = 1024**3
BITS_ALLOCATED = (1, 8, 16, 32, 64)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_VOXEL_BYTES = 4  # the loader decodes into float32
# JPEG start-of-frame markers (ISO/IEC 10918-1 B.1.1.3) and JPEG-LS's SOF55: the frame
# header that says how many lines, samples per line and components the decoder makes.
_SOF_MARKERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}
_MARKERS_WITHOUT_LENGTH = frozenset({0x01, *range(0xD0, 0xDA)})
_J2K_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the image and tile size marker
_J2K_SEARCH_BYTES = 64 * 1024  # a JP2 file's header boxes before its codestream


@dataclass(frozen=True)
class DecodeLimits:
    """How much memory decoding may take: one frame as the decoder returns it, and the
    whole series as the loader holds it (float32, every temporal position)."""

    frame_bytes: int = 64 * MiB
    series_bytes: int = 2 * GiB


@dataclass(frozen=True)
class DeclaredPixels:
    """An instance's pixels as its header declares them."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    frames: int

    @property
    def frame_bytes(self) -> int:
        """One frame as a decoder returns it (1-bit pixels unpack to one byte each)."""
        return self.rows * self.columns * self.samples * max(self.bits_allocated, 8) // 8

    @property
    def stored_bytes(self) -> int:
        """Native pixel data of every frame (1-bit pixels packed, PS3.5 8.1.1)."""
        bits = self.rows * self.columns * self.samples * self.frames * self.bits_allocated
        return (bits + 7) // 8


def check_declared_pixels(path: Path, ds: Dataset, limits: DecodeLimits) -> DeclaredPixels:
    """Refuse an instance whose pixel header is nonsense or whose frame is over the limit;
    what it declares otherwise. Reads no pixel data but a compressed frame's header."""
    what = describe(path, ds)
    declared = DeclaredPixels(
        rows=_positive(ds, "Rows", what),
        columns=_positive(ds, "Columns", what),
        samples=_positive(ds, "SamplesPerPixel", what, default=1),
        bits_allocated=_bits_allocated(ds, what),
        frames=_positive(ds, "NumberOfFrames", what, default=1),
    )
    if declared.frame_bytes > limits.frame_bytes:
        raise SeriesTooLarge(
            f"{what} declares frames of {declared.rows}x{declared.columns} pixels at "
            f"{declared.bits_allocated} bits ({declared.samples} sample(s)), "
            f"{_size(declared.frame_bytes)} each once decoded, over the limit of "
            f"{_size(limits.frame_bytes)} per frame (AINODE_MAX_FRAME_BYTES)"
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_encapsulated:
        _check_codestreams(what, ds, declared)
    else:
        # A deflated data set is inflated in memory: its offsets are not the file's.
        inflated = syntax is not None and syntax.is_deflated
        _check_native_length(None if inflated else path, what, ds, declared)
    return declared


def check_series_bytes(
    slices: int, rows: int, columns: int, time_points: int, limits: DecodeLimits, frame: int
) -> None:
    """Refuse a series whose decoded voxels (``slices`` of ``rows`` x ``columns`` float32,
    plus every temporal position of a 4D series) and one decoded ``frame`` would pass
    ``limits.series_bytes``."""
    volume = slices * rows * columns * _VOXEL_BYTES
    needed = volume + (volume * time_points if time_points > 1 else 0) + frame
    if needed > limits.series_bytes:
        timed = f" at {time_points} temporal positions" if time_points > 1 else ""
        raise SeriesTooLarge(
            f"the series of {slices} slices of {rows}x{columns} pixels{timed} needs "
            f"{_size(needed)} decoded, over the limit of {_size(limits.series_bytes)} per "
            "series (AINODE_MAX_DECODED_BYTES)"
        )


def _positive(ds: Dataset, keyword: str, what: str, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value in (None, "") and default is not None:
        return default
    number = _integer(value)
    if number is None or number < 1:
        raise SeriesNotAnalysable(
            f"{what} declares {dictionary_description(keyword)} {_shown(value)}: "
            "not a positive number"
        )
    return number


def _bits_allocated(ds: Dataset, what: str) -> int:
    value = ds.get("BitsAllocated")
    bits = _integer(value)
    if bits not in BITS_ALLOCATED:
        raise SeriesNotAnalysable(
            f"{what} declares Bits Allocated {_shown(value)}: decoders take "
            f"{', '.join(map(str, BITS_ALLOCATED[:-1]))} or {BITS_ALLOCATED[-1]}"
        )
    return bits


def _integer(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _shown(value: object) -> str:
    return "(none)" if value in (None, "") else str(value)


def _check_native_length(
    path: Path | None, what: str, ds: Dataset, declared: DeclaredPixels
) -> None:
    """Native pixel data shorter than its header declares cannot fill the frames; one
    whose value runs past the end of the file at ``path`` was cut short. The value is
    not read."""
    for keyword in PIXEL_DATA_KEYWORDS:
        tag = Tag(keyword)
        if tag not in ds:
            continue
        element = ds.get_item(tag, keep_deferred=True)
        length = getattr(element, "length", None)
        if length is None:  # already read: its value is what it holds
            length = len(element.value or b"")
        if length == _UNDEFINED_LENGTH:
            raise SeriesNotAnalysable(
                f"{what} has encapsulated pixel data under a native transfer syntax"
            )
        if length < declared.stored_bytes:
            raise SeriesNotAnalysable(
                f"{what} holds {length} bytes of pixel data where its header declares "
                f"{declared.frames} frame(s) of {declared.rows}x{declared.columns} at "
                f"{declared.bits_allocated} bits ({declared.stored_bytes} bytes)"
            )
        offset = getattr(element, "value_tell", None)
        if path is not None and offset is not None and offset + length > path.stat().st_size:
            raise SeriesNotAnalysable(
                f"{what} is cut short: its pixel data should end at byte {offset + length}, "
                f"the file has {path.stat().st_size}"
            )


def _check_codestreams(what: str, ds: Dataset, declared: DeclaredPixels) -> None:
    """Each compressed frame's codestream must declare the data set's size: its decoder
    allocates what the codestream says, whatever Rows and Columns say."""
    if "PixelData" not in ds:
        return
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    frame = 0
    try:
        for frame, fragments in enumerate(
            generate_fragmented_frames(
                ds.PixelData, number_of_frames=declared.frames, extended_offsets=offsets
            ),
            start=1,
        ):
            size = codestream_size(fragments[0] if fragments else b"")
            if size is not None and size != (declared.rows, declared.columns, declared.samples):
                rows, columns, components = size
                raise SeriesNotAnalysable(
                    f"frame {frame} of {what} is a codestream of {rows}x{columns} pixels "
                    f"with {components} component(s) where the data set declares "
                    f"{declared.rows}x{declared.columns} with {declared.samples}: refused "
                    "before decoding, as its decoder would allocate what the codestream says"
                )
    except (ValueError, struct.error) as exc:
        raise SeriesNotAnalysable(
            f"the encapsulated pixel data of {what} cannot be read (frame {frame + 1}): {exc}"
        ) from exc


def codestream_size(stream: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) a JPEG, JPEG-LS or JPEG 2000 frame header declares;
    None for other streams (RLE, whose decoder allocates by the data set) or when no
    frame header is found."""
    if stream[:2] == b"\xff\xd8":
        return _jpeg_frame_header(stream)
    at = stream.find(_J2K_SIZ, 0, _J2K_SEARCH_BYTES)
    if at >= 0:
        # SIZ: Lsiz, Rsiz (2 bytes each), Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz,
        # YTOsiz (4 each), Csiz (2); the image is (Xsiz - XOsiz) x (Ysiz - YOsiz).
        x, y, x_offset, y_offset = struct.unpack_from(">4I", stream, at + 8)
        (components,) = struct.unpack_from(">H", stream, at + 40)
        return y - y_offset, x - x_offset, components
    return None


def _jpeg_frame_header(stream: bytes) -> tuple[int, int, int] | None:
    """Walk the marker segments of a JPEG or JPEG-LS stream to its start of frame."""
    at = 2
    while at + 4 <= len(stream):
        if stream[at] != 0xFF:
            return None
        marker = stream[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in _MARKERS_WITHOUT_LENGTH:
            at += 2
            continue
        if marker in _SOF_MARKERS:
            # Lf (2), precision (1), lines (2), samples per line (2), components (1)
            lines, samples, components = struct.unpack_from(">HHB", stream, at + 5)
            return lines, samples, components
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", stream, at + 2)
        at += 2 + length
    return None


def _size(count: int) -> str:
    if count >= GiB:
        return f"{count / GiB:.1f} GiB"
    if count >= MiB:
        return f"{count / MiB:.1f} MiB"
    return f"{count} bytes"
