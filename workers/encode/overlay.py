"""Drawing overlay pictures: a result burned into its source slices, for viewers without SEG.

This module owns the pixels of the Secondary Capture overlay images (the DICOM object
around them is :mod:`workers.encode.sc`'s): each picture is one source slice shown as
the source's own window shows it, with every segment filled and outlined in its
colour, under a band of text: the model and its version, each segment's volume, each
class's finding, probability and threshold (worded as the worklist words them), and a
notice that the image is an AI result not to be used for diagnosis alone. Nothing
identifying the patient is drawn.

A segmentation model gets one picture per slice holding any segment voxel (evenly
chosen when there are more than :data:`MAX_OVERLAY_IMAGES`); a classification-only
model, or one that found nothing, gets one picture of the middle slice.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset

from models.finding_words import class_words, segment_words
from models.manifest import ModelManifest
from workers.encode.identity import DEMONSTRATION_NOTICE
from workers.errors import EncodingError
from workers.pixels import apply_voi, functional_groups, group_macro
from workers.volume import Volume

MAX_OVERLAY_IMAGES = 50
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSIS ALONE - AI RESULT"
# A soft-tissue window (centre, width in HU) for CT that carries no window of its own.
_SOFT_TISSUE_WINDOW = (40.0, 400.0)
# Percentiles of the volume that span the grey scale of a non-CT image without a window,
# taken on every fourth row and column: the same values, several times faster.
_DISPLAY_PERCENTILES = (1.0, 99.0)
_PERCENTILE_STRIDE = 4
_FILL_OPACITY = 0.4
# Small images are enlarged (by whole factors, each voxel a square) so that the text
# band's lines fit; 256 columns hold about 40 characters of the bitmap font.
_MIN_WIDTH = 256
# Larger images get the text drawn larger, one step per this many columns.
_TEXT_STEP_WIDTH = 512
_MAX_FINDING_LINES = 12
_MARGIN = 4
_LINE_SPACING = 2
_SWATCH = 8
_WHITE = (255, 255, 255)
_YELLOW = (255, 225, 25)
_BAND = (0, 0, 0)
# Segment colours, by segment number (manifests carry no display colour): saturated
# hues that stay apart from each other and from grey, the first few the most distinct.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (255, 225, 25),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
)


@dataclass(frozen=True)
class _Line:
    """One entry of the text band: its words, colour, and a segment's swatch if any."""

    text: str
    colour: tuple[int, int, int] = _WHITE
    swatch: tuple[int, int, int] | None = None


def overlay_pictures(
    volume: Volume,
    labels: np.ndarray | None,
    manifest: ModelManifest,
    findings: Mapping[str, Any],
    max_images: int = MAX_OVERLAY_IMAGES,
) -> Iterator[tuple[int, np.ndarray]]:
    """(slice index, RGB picture) of each slice that gets an overlay, in slice order.

    ``labels`` (same shape as the volume, the manifest's segment label values, 0 for
    background) is None for a classification-only model. ``findings`` is the summary
    :func:`workers.pipeline.summarise` makes: the text states each segment's
    ``volume_ml`` and each class's ``finding``, ``present`` and ``probability`` from it.
    The inputs are checked at once; each picture is drawn when it is asked for, so that
    a series' pictures are never all held together.

    Raises
    ------
    EncodingError
        When ``labels`` does not fit the volume or the manifest, or ``findings`` lacks
        a declared output.
    """
    numbers = _segment_numbers(volume, labels, manifest)
    lines = _finding_lines(manifest, findings)
    slices = overlay_slices(volume, numbers, max_images)
    return _draw(volume, numbers, slices, manifest, lines, _fallback_range(volume))


def _draw(
    volume: Volume,
    numbers: np.ndarray | None,
    slices: list[int],
    manifest: ModelManifest,
    lines: list[_Line],
    low_high: tuple[float, float],
) -> Iterator[tuple[int, np.ndarray]]:
    for index in slices:
        plane = numbers[index] if numbers is not None else None
        yield index, _render(volume, index, plane, manifest, lines, low_high)


def overlay_slices(
    volume: Volume, numbers: np.ndarray | None, max_images: int = MAX_OVERLAY_IMAGES
) -> list[int]:
    """Which slices get an overlay, in slice order.

    Every slice holding a segment voxel, or ``max_images`` of them evenly spread
    (the first and last always among them); the middle slice when there are none.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, not {max_images}")
    if numbers is not None:
        found = np.flatnonzero(numbers.reshape(numbers.shape[0], -1).any(axis=1))
        if len(found) > max_images:
            found = found[np.linspace(0, len(found) - 1, max_images).round().astype(int)]
        if len(found):
            return [int(i) for i in found]
    return [volume.shape[0] // 2]


def segment_colour(segment_number: int) -> tuple[int, int, int]:
    """The RGB colour of segment ``segment_number`` (1-based, the manifest's order)."""
    return PALETTE[(segment_number - 1) % len(PALETTE)]


def _segment_numbers(
    volume: Volume, labels: np.ndarray | None, manifest: ModelManifest
) -> np.ndarray | None:
    """``labels`` with each manifest label value replaced by its segment number."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise EncodingError(f"label volume has shape {labels.shape}, the series {volume.shape}")
    if labels.dtype.kind not in "iub":
        raise EncodingError(f"label volume must hold integers, not {labels.dtype}")
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0 or high > 255:
        raise EncodingError(f"label values {low}..{high} lie outside 0..255")
    lookup = np.zeros(256, dtype=np.uint8)
    for number, spec in enumerate(manifest.outputs.segments, start=1):
        lookup[spec.label] = number
    numbers = lookup[labels.astype(np.uint8, copy=False)]
    unknown = (labels != 0) & (numbers == 0)
    if unknown.any():
        values = sorted({int(v) for v in np.unique(labels[unknown])})
        raise EncodingError(
            f"label volume holds values {values} that model {manifest.name} does not declare"
        )
    return numbers


def _fallback_range(volume: Volume) -> tuple[float, float]:
    """The values shown black and white on slices whose source carries no window.

    A soft-tissue window for CT (its values are HU); for other modalities, whose
    values have no fixed scale, percentiles of the whole volume so that every
    slice of the series is shown alike.
    """
    if str(volume.datasets[0].get("Modality", "")).upper() == "CT":
        center, width = _SOFT_TISSUE_WINDOW
        return center - width / 2, center + width / 2
    sample = volume.voxels[:, ::_PERCENTILE_STRIDE, ::_PERCENTILE_STRIDE]
    low, high = np.percentile(sample, _DISPLAY_PERCENTILES)
    return float(low), float(max(high, low + 1e-6))


def _voi_item(volume: Volume, index: int) -> Dataset | None:
    """The dataset holding slice ``index``'s window or VOI LUT, None when it has none."""
    source = volume.datasets[index]
    frame = volume.frame_numbers[index] if volume.frame_numbers else None
    item = group_macro(functional_groups(source, frame), "FrameVOILUTSequence") or source
    has_window = item.get("WindowCenter") is not None and item.get("WindowWidth") is not None
    return item if has_window or item.get("VOILUTSequence") else None


def _brightness(volume: Volume, index: int, fallback: tuple[float, float]) -> np.ndarray:
    """Slice ``index`` as its viewer shows it, brightness in [0, 1].

    The source's own first window (or VOI LUT) when it has one: it is how the
    images were meant to be read. ``workers.pixels.apply_voi`` applies it, undoing
    the loader's MONOCHROME1 inversion first.
    """
    voxels = volume.voxels[index]
    if _voi_item(volume, index) is not None:
        frame = volume.frame_numbers[index] if volume.frame_numbers else None
        try:
            return apply_voi(voxels, volume.datasets[index], frame=frame)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError):
            pass  # a window that cannot be applied (width 0, bad LUT): use the default
    low, high = fallback
    return np.clip((voxels - np.float32(low)) / np.float32(high - low), 0.0, 1.0)


def _render(
    volume: Volume,
    index: int,
    numbers: np.ndarray | None,
    manifest: ModelManifest,
    lines: list[_Line],
    fallback: tuple[float, float],
) -> np.ndarray:
    """The RGB picture of slice ``index``: the text band above the overlaid slice."""
    grey = np.rint(_brightness(volume, index, fallback) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    visible: list[int] = []
    if numbers is not None:
        for number in range(1, len(manifest.outputs.segments) + 1):
            mask = numbers == number
            if mask.any():
                visible.append(number)
                _paint(rgb, mask, segment_colour(number))
    factor = max(1, math.ceil(_MIN_WIDTH / rgb.shape[1]))
    picture = rgb.repeat(factor, axis=0).repeat(factor, axis=1)
    shown = [*_header_lines(manifest), *_slice_lines(lines, visible)]
    band = _text_band(shown, picture.shape[1])
    return np.concatenate([band, picture], axis=0)


def _paint(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Fill ``mask`` in ``colour`` over the grey image, and draw its outline opaque.

    The fill is translucent so the anatomy under a segment stays visible; the
    outline (mask voxels with a 4-neighbour outside the mask) says exactly where
    the segment ends.
    """
    tint = np.asarray(colour, dtype=np.float32)
    blended = rgb[mask].astype(np.float32) * (1 - _FILL_OPACITY) + tint * _FILL_OPACITY
    rgb[mask] = np.rint(blended).astype(np.uint8)
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    rgb[mask & ~interior] = colour


# Text ------------------------------------------------------------------------


def _finding_lines(manifest: ModelManifest, findings: Mapping[str, Any]) -> list[_Line]:
    """One line per manifest output, in manifest order, worded from ``findings`` as the
    worklist words them (``models.finding_words``)."""
    lines = []
    segments = findings.get("segments") or {}
    for number, spec in enumerate(manifest.outputs.segments, start=1):
        if spec.name not in segments:
            raise EncodingError(f"the findings hold no volume for segment {spec.name!r}")
        volume_ml = float(segments[spec.name]["volume_ml"])
        lines.append(_Line(segment_words(spec.name, volume_ml), swatch=segment_colour(number)))
    classes = findings.get("classes") or {}
    for spec in manifest.outputs.classes:
        if spec.name not in classes:
            raise EncodingError(f"the findings hold no result for class {spec.name!r}")
        result = classes[spec.name]
        finding = result.get("finding") or spec.finding.meaning
        probability = float(result["probability"])
        lines.append(_Line(class_words(finding, probability, spec.threshold, result["present"])))
    return lines


def _header_lines(manifest: ModelManifest) -> list[_Line]:
    """The model that made the result, and the notice that it is an AI result."""
    lines = [_Line(f"{manifest.title} {manifest.version}"), _Line(NOT_FOR_DIAGNOSIS, _YELLOW)]
    if manifest.demonstration:
        lines.append(_Line(DEMONSTRATION_NOTICE.strip(" ()"), _YELLOW))
    return lines


def _slice_lines(lines: list[_Line], visible: list[int]) -> list[_Line]:
    """The finding lines one image shows, at most :data:`_MAX_FINDING_LINES`.

    When they do not all fit, the segments seen on this slice come first, so the
    colours on the image are always explained, and a last line counts the rest.
    """
    if len(lines) <= _MAX_FINDING_LINES:
        return lines
    first = [number - 1 for number in visible]  # segment n is line n - 1
    order = first + [i for i in range(len(lines)) if i not in set(first)]
    kept = _MAX_FINDING_LINES - 1
    rest = len(lines) - kept
    return [*(lines[i] for i in order[:kept]), _Line(f"+{rest} more results: see the AI report")]


def _font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font: no font file needed, the same pixels everywhere."""
    return ImageFont.load_default_imagefont()


def _text_band(lines: list[_Line], width: int) -> np.ndarray:
    """The band of text above the image, ``width`` columns wide, white on black."""
    scale = max(1, width // _TEXT_STEP_WIDTH)
    font = _font()
    canvas_width = width // scale
    line_height = font.getbbox("Hg")[3] + _LINE_SPACING
    indent = _SWATCH + _MARGIN
    rows: list[tuple[_Line, str, bool]] = []
    for line in lines:
        left = indent if line.swatch else 0
        wrapped = _wrap(_printable(line.text), font, canvas_width - 2 * _MARGIN - left)
        rows.extend((line, text, number == 0) for number, text in enumerate(wrapped))
    height = 2 * _MARGIN + line_height * len(rows)
    image = Image.new("RGB", (canvas_width, height), _BAND)
    draw = ImageDraw.Draw(image)
    for row, (line, text, first) in enumerate(rows):
        top = _MARGIN + row * line_height
        left = _MARGIN + (indent if line.swatch else 0)
        if line.swatch and first:
            draw.rectangle(
                (_MARGIN, top + 1, _MARGIN + _SWATCH - 1, top + _SWATCH), fill=line.swatch
            )
        draw.text((left, top), text, font=font, fill=line.colour)
    if scale > 1:
        image = image.resize((canvas_width * scale, height * scale), Image.Resampling.NEAREST)
    band = np.asarray(image, dtype=np.uint8)
    if band.shape[1] < width:  # width not a multiple of the scale: pad on the right
        band = np.pad(band, ((0, 0), (0, width - band.shape[1]), (0, 0)))
    return band


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels."""
    average = max(1.0, font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    columns = max(8, int(width / average))
    while columns > 8:
        wrapped = textwrap.wrap(text, columns, break_on_hyphens=False) or [""]
        if all(font.getlength(part) <= width for part in wrapped):
            return wrapped
        columns -= 1
    return textwrap.wrap(text, columns) or [""]


def _printable(text: str) -> str:
    """``text`` in the characters the bitmap font has (printable Latin-1), others as '?'."""
    return "".join(c if c.isprintable() and ord(c) < 256 else "?" for c in text)
