"""Encoding a model's result as Secondary Capture overlay images, for viewers without SEG.

The one place that builds overlay objects, and the node's own checks on them. Some
archives and viewers cannot show a DICOM Segmentation or read a structured report;
for them the result is also written as ordinary pictures: Secondary Capture Image
Storage (1.2.840.10008.5.1.4.1.1.7), RGB, in Explicit VR Little Endian, a new series
in the source study. Each image is one source slice shown as the source's own window
shows it, with every segment filled and outlined in its colour, under a band of text
burned into the pixels: the model and its version, each segment's volume, each
class's finding and probability, and a notice that the image is an AI result not to
be used for diagnosis alone. Nothing identifying the patient is drawn.

A segmentation model gets one image per slice holding any segment voxel (evenly
chosen when there are more than :data:`MAX_OVERLAY_IMAGES`); a classification-only
model, or one that found nothing, gets one image of the middle slice. UIDs derive
from the caller's and from the slice, so a re-run yields the same instances.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from models.manifest import ModelManifest
from node.uids import derive_uid
from workers.encode.seg import (
    DEMONSTRATION_NOTICE,
    MANUFACTURER,
    content_datetime,
    default_series_number,
    device_serial_number,
    make_deterministic,
    result_description,
    software_versions,
    source_headers,
)
from workers.errors import EncodingError
from workers.pixels import apply_voi, functional_groups, group_macro
from workers.volume import Volume

MAX_OVERLAY_IMAGES = 50
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSIS ALONE - AI RESULT"
# default_series_number adds 1000 (SEG) and its offset: overlays default to source + 3000.
_SERIES_NUMBER_OFFSET = 2000
_ST_LENGTH = 1024
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
# CID 7202 "Source Image Purposes of Reference".
_SOURCE_PURPOSE = dicom_codes.DCM.SourceImageForImageProcessingOperation
# CID 7203 "Image Derivation": the picture shows a segmentation of its source.
_DERIVATION = dicom_codes.cid7203.SegmentationImageDerivation


@dataclass(frozen=True)
class _Line:
    """One entry of the text band: its words, colour, and a segment's swatch if any."""

    text: str
    colour: tuple[int, int, int] = _WHITE
    swatch: tuple[int, int, int] | None = None


def encode_overlay(
    volume: Volume,
    labels: np.ndarray | None,
    manifest: ModelManifest,
    findings: Mapping[str, Any],
    series_uid: str,
    instance_uid: str,
    *,
    series_number: int | None = None,
    max_images: int = MAX_OVERLAY_IMAGES,
) -> list[hd.sc.SCImage]:
    """Secondary Capture images of ``volume`` with ``labels`` and ``findings`` burned in.

    ``labels`` (same shape as the volume, the manifest's segment label values, 0 for
    background) is None for a classification-only model. ``findings`` is the summary
    :func:`workers.pipeline.summarise` makes: the text states each segment's
    ``volume_ml`` and each class's ``finding``, ``present`` and ``probability`` from it.
    Instance ``k`` (in slice order) has SOP Instance UID
    :func:`overlay_instance_uid` of ``instance_uid`` and its slice index, and
    Instance Number ``k + 1``. ``series_number`` defaults to the source series number
    plus 3000.

    Raises
    ------
    EncodingError
        When ``labels`` does not fit the volume or the manifest, ``findings`` lacks a
        declared output, or highdicom refuses the object.
    """
    numbers = _segment_numbers(volume, labels, manifest)
    lines = _finding_lines(manifest, findings)
    slices = overlay_slices(volume, numbers, max_images)
    low_high = _fallback_range(volume)
    header = source_headers(volume)[0]
    series = _series_attributes(volume, header, manifest, series_uid, series_number)
    images = []
    for position, index in enumerate(slices, start=1):
        plane = numbers[index] if numbers is not None else None
        pixels = _render(volume, index, plane, manifest, lines, low_high)
        uid = overlay_instance_uid(instance_uid, index)
        images.append(_build_image(volume, index, pixels, manifest, header, series, uid, position))
    return images


def overlay_instance_uid(instance_uid: str, slice_index: int) -> str:
    """The SOP Instance UID of the overlay of slice ``slice_index`` (0-based, volume order)."""
    return derive_uid("ainode-overlay-instance", instance_uid, str(slice_index))


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


# Pixels ----------------------------------------------------------------------


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
    """One line per manifest output, in manifest order, worded from ``findings``."""
    lines = []
    segments = findings.get("segments") or {}
    for number, spec in enumerate(manifest.outputs.segments, start=1):
        if spec.name not in segments:
            raise EncodingError(f"the findings hold no volume for segment {spec.name!r}")
        volume_ml = float(segments[spec.name]["volume_ml"])
        lines.append(
            _Line(f"{spec.name}: {_millilitres(volume_ml)}", swatch=segment_colour(number))
        )
    classes = findings.get("classes") or {}
    for spec in manifest.outputs.classes:
        if spec.name not in classes:
            raise EncodingError(f"the findings hold no result for class {spec.name!r}")
        result = classes[spec.name]
        state = "present" if result["present"] else "absent"
        finding = result.get("finding") or spec.finding.meaning
        lines.append(_Line(f"{finding}: {state} (p={float(result['probability']):.2f})"))
    return lines


def _millilitres(volume_ml: float) -> str:
    """A volume in mL: one decimal, or two significant digits below 1 mL.

    So that a small segment, visible on the image, does not read as 0.0 mL.
    """
    if volume_ml == 0 or volume_ml >= 1:
        return f"{volume_ml:.1f} mL"
    return f"{volume_ml:.2g} mL"


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


# DICOM -----------------------------------------------------------------------


def _series_attributes(
    volume: Volume,
    header: Dataset,
    manifest: ModelManifest,
    series_uid: str,
    series_number: int | None,
) -> dict[str, Any]:
    """The arguments of highdicom's SC image that every image of the series shares."""
    content_date, content_time = content_datetime(volume)
    return {
        "series_instance_uid": series_uid,
        "series_number": series_number or default_series_number(header, _SERIES_NUMBER_OFFSET),
        "manufacturer": MANUFACTURER,
        "transfer_syntax_uid": ExplicitVRLittleEndian,
        "series_description": result_description(manifest, "overlay (AI)"),
        "manufacturer_model_name": manifest.name,
        "software_versions": software_versions(manifest),
        "device_serial_number": device_serial_number(manifest),
        "content_date": content_date,
        "content_time": content_time,
    }


def _build_image(
    volume: Volume,
    index: int,
    pixels: np.ndarray,
    manifest: ModelManifest,
    header: Dataset,
    series: dict[str, Any],
    sop_instance_uid: str,
    instance_number: int,
) -> hd.sc.SCImage:
    """The Secondary Capture instance showing ``pixels``, derived from slice ``index``.

    ``header`` is the completed copy of the first source header (``source_headers``):
    the same patient and study attributes on every image, empty where the archive's
    images lack a Type 2 one.
    """
    orientation = _patient_orientation(volume)
    try:
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=header,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            pixel_spacing=_pixel_spacing(volume, pixels.shape[1] // volume.shape[2]),
            # highdicom takes one letter per direction; the full value is set below.
            patient_orientation=(orientation[0][:1] or "L", orientation[1][:1] or "P"),
            **series,
        )
        # Patient and study modules in full (identity removal, clinical trial, ...),
        # as the SEG and SR copy them, not only the attributes highdicom names.
        image.copy_patient_and_study_information(header)
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodingError(f"cannot encode the overlay as DICOM Secondary Capture: {exc}") from exc
    # Empty (Type 2C) when the source has no patient geometry and states none.
    image.PatientOrientation = list(orientation) if all(orientation) else ""
    _describe_derivation(image, volume, index, manifest)
    image.SecondaryCaptureDeviceManufacturer = MANUFACTURER
    image.SecondaryCaptureDeviceManufacturerModelName = manifest.name
    image.SecondaryCaptureDeviceSoftwareVersions = software_versions(manifest)
    _copy_lossy_compression(image, volume.datasets[index])
    _copy_body_part(image, header)
    # Type 3 clock values: left out so that a re-run gives the same object.
    for keyword in ("DateOfSecondaryCapture", "TimeOfSecondaryCapture"):
        if keyword in image:
            delattr(image, keyword)
    make_deterministic(image, sop_instance_uid)
    return image


def _describe_derivation(
    image: hd.sc.SCImage, volume: Volume, index: int, manifest: ModelManifest
) -> None:
    """Mark the image as a derived AI picture and reference the source image it shows."""
    image.ImageType = ["DERIVED", "SECONDARY"]
    # Workstation: the node rendered the picture from the source's pixel data.
    image.ConversionType = "WSD"
    image.BurnedInAnnotation = "YES"
    image.DerivationDescription = (
        f"AI result of {manifest.title} {manifest.version} ({manifest.name}) in colour "
        f"over the source image, findings burned in; {NOT_FOR_DIAGNOSIS}"
    )[:_ST_LENGTH]
    derivation = Dataset()
    derivation.CodeValue = _DERIVATION.value
    derivation.CodingSchemeDesignator = _DERIVATION.scheme_designator
    derivation.CodeMeaning = _DERIVATION.meaning
    image.DerivationCodeSequence = [derivation]
    source = volume.datasets[index]
    frame = volume.frame_numbers[index] if volume.frame_numbers else None
    image.SourceImageSequence = [_image_reference(source, frame, purpose=True)]
    image.ReferencedImageSequence = [_image_reference(source, frame, purpose=False)]


def _image_reference(source: Dataset, frame: int | None, *, purpose: bool) -> Dataset:
    """A reference to ``source`` (its ``frame`` for a multi-frame image)."""
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = frame
    if purpose:
        code = Dataset()
        code.CodeValue = _SOURCE_PURPOSE.value
        code.CodingSchemeDesignator = _SOURCE_PURPOSE.scheme_designator
        code.CodeMeaning = _SOURCE_PURPOSE.meaning
        item.PurposeOfReferenceCodeSequence = [code]
    return item


def _copy_lossy_compression(image: Dataset, source: Dataset) -> None:
    """Say the picture was lossy compressed when its source was (General Image, 1C)."""
    if str(source.get("LossyImageCompression", "")) != "01":
        return
    image.LossyImageCompression = "01"
    for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if source.get(keyword):
            setattr(image, keyword, source[keyword].value)


def _copy_body_part(image: Dataset, source: Dataset) -> None:
    """The source's body part and laterality, so the overlay files with its images.

    General Series Laterality (Type 2C) is needed for a paired body part without an
    Image Laterality; when the source says neither body part nor laterality, it is
    sent empty, which the standard reads as unknown.
    """
    for keyword in ("BodyPartExamined", "Laterality", "ImageLaterality"):
        if source.get(keyword):
            setattr(image, keyword, source[keyword].value)
    if not any(source.get(k) for k in ("BodyPartExamined", "Laterality", "ImageLaterality")):
        image.Laterality = ""


def _pixel_spacing(volume: Volume, factor: int) -> tuple[float, float] | None:
    """The spacing of the picture's pixels, when the source states it in the patient.

    A projection image's Imager Pixel Spacing (at the detector, not the patient), or
    the loader's default for an image without any, is not claimed.
    """
    source = volume.datasets[0]
    frame = volume.frame_numbers[0] if volume.frame_numbers else None
    measures = group_macro(functional_groups(source, frame), "PixelMeasuresSequence")
    if "PixelSpacing" not in source and (measures is None or "PixelSpacing" not in measures):
        return None
    return volume.spacing[1] / factor, volume.spacing[2] / factor


def _patient_orientation(volume: Volume) -> tuple[str, str]:
    """Patient Orientation of the rows and columns of the volume's slices.

    Taken from the slice directions when the source has patient geometry (letters
    of the significant axes, most significant first, as PS3.3 C.7.6.1.1.1 orders
    them for oblique images); else the source's own value, which may be empty.
    """
    source = volume.datasets[0]
    frame = volume.frame_numbers[0] if volume.frame_numbers else None
    plane = group_macro(functional_groups(source, frame), "PlaneOrientationSequence")
    if "ImageOrientationPatient" in source or plane is not None:
        return _direction_letters(volume.row_direction), _direction_letters(volume.column_direction)
    value = source.get("PatientOrientation")
    if value is not None and len(value) == 2:
        return str(value[0]), str(value[1])
    return "", ""


def _direction_letters(direction: np.ndarray) -> str:
    """The orientation letters of a direction in the patient coordinate system (LPH+)."""
    letters = []
    components = np.asarray(direction, dtype=np.float64)
    for axis in np.argsort(-np.abs(components)):
        if abs(components[axis]) < 0.1:  # under about 6 degrees off an axis: not named
            break
        letters.append(("RL", "AP", "FH")[axis][int(components[axis] > 0)])
    return "".join(letters)


# Checks ----------------------------------------------------------------------


def check_overlay(ds: Dataset, sources: Sequence[Dataset] | None = None) -> list[str]:
    """The problems with an overlay image, as the node promises it; empty means none.

    The image is Secondary Capture, RGB, DERIVED\\SECONDARY with its annotation
    declared burned in, and references the source image it was made from. Given
    ``sources`` (the source series' headers, such as ``Volume.datasets``) it must
    also lie in their study, for their patient, in a series of its own, and
    reference only images among them; without them those checks cannot be made.
    """
    problems: list[str] = []
    if str(ds.get("SOPClassUID", "")) != SecondaryCaptureImageStorage:
        problems.append(f"SC overlay: SOP Class UID is {ds.get('SOPClassUID')!r}, not SC")
    photometric = ds.get("PhotometricInterpretation")
    if photometric != "RGB" or ds.get("SamplesPerPixel") != 3:
        problems.append(
            f"SC overlay: {photometric!r} with {ds.get('SamplesPerPixel')!r} samples per "
            "pixel, not RGB with 3"
        )
    if ds.get("BurnedInAnnotation") != "YES":
        problems.append(
            f"SC overlay: Burned In Annotation is {ds.get('BurnedInAnnotation')!r}, not YES"
        )
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if image_type[:2] != ["DERIVED", "SECONDARY"]:
        problems.append(f"SC overlay: Image Type {image_type} is not DERIVED\\SECONDARY")
    problems.extend(_check_references(ds, sources))
    if sources:
        problems.extend(_check_study(ds, sources[0]))
    return problems


def _check_references(ds: Dataset, sources: Sequence[Dataset] | None) -> list[str]:
    references = list(ds.get("SourceImageSequence", []))
    if not references:
        return ["SC overlay: SourceImageSequence is empty (no source image referenced)"]
    problems = []
    known = {str(s.SOPInstanceUID) for s in sources or []}
    for number, item in enumerate(references, start=1):
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        if not uid or not item.get("ReferencedSOPClassUID"):
            problems.append(f"SC overlay: source image reference {number} lacks its SOP UIDs")
        elif sources and uid not in known:
            problems.append(f"SC overlay: source image {uid} is not one of the source images")
    return problems


def _check_study(ds: Dataset, source: Dataset) -> list[str]:
    problems = []
    for keyword, what in (("StudyInstanceUID", "study"), ("PatientID", "patient")):
        if str(ds.get(keyword, "")) != str(source.get(keyword, "")):
            problems.append(
                f"SC overlay: {keyword} {ds.get(keyword)!r} is not the source {what}'s "
                f"{source.get(keyword)!r}"
            )
    if str(ds.get("SeriesInstanceUID", "")) == str(source.get("SeriesInstanceUID", "")):
        problems.append("SC overlay: Series Instance UID is the source series', not a new one")
    return problems
