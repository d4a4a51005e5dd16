"""A model's result as Secondary Capture overlay images, for viewers without SEG.

The one place that builds SC objects. Some archives and viewers cannot show a DICOM
Segmentation or read a structured report; for them the result is also written as
ordinary pictures (drawn by :mod:`workers.encode.overlay`): Secondary Capture Image
Storage (1.2.840.10008.5.1.4.1.1.7), RGB, in Explicit VR Little Endian, a new series
in the source study, each image derived from the source slice it shows. UIDs come
from :mod:`workers.encode.identity` (each image's from the caller's and its slice),
so a re-run yields the same instances; the node's checks on these images are in the
gate, :mod:`workers.encode.conformance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.uid import ExplicitVRLittleEndian

from models.manifest import ModelManifest
from workers.encode.identity import (
    MANUFACTURER,
    content_datetime,
    default_series_number,
    device_serial_number,
    make_deterministic,
    positive_values,
    result_description,
    sc_image_uid,
    software_versions,
    source_headers,
)
from workers.encode.overlay import MAX_OVERLAY_IMAGES, NOT_FOR_DIAGNOSIS, overlay_pictures
from workers.errors import EncodingError
from workers.pixels import functional_groups, group_macro
from workers.volume import Volume

# default_series_number adds 1000 (SEG) and its offset: overlays default to source + 3000.
_SERIES_NUMBER_OFFSET = 2000
_ST_LENGTH = 1024
# CID 7202 "Source Image Purposes of Reference".
_SOURCE_PURPOSE = dicom_codes.DCM.SourceImageForImageProcessingOperation
# CID 7203 "Image Derivation": the picture shows a segmentation of its source.
_DERIVATION = dicom_codes.cid7203.SegmentationImageDerivation


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

    ``labels`` and ``findings`` are as :func:`workers.encode.overlay.overlay_pictures`
    takes them. Instance ``k`` (in slice order) has SOP Instance UID
    :func:`~workers.encode.identity.sc_image_uid` of ``instance_uid`` and its slice
    index, and Instance Number ``k + 1``. ``series_number`` defaults to the source
    series number plus 3000.

    Raises
    ------
    EncodingError
        When ``labels`` does not fit the volume or the manifest, ``findings`` lacks a
        declared output, or highdicom refuses the object.
    """
    pictures = overlay_pictures(volume, labels, manifest, findings, max_images)
    header = source_headers(volume)[0]
    series = _series_attributes(volume, header, manifest, series_uid, series_number)
    images = []
    for position, (index, pixels) in enumerate(pictures, start=1):
        uid = sc_image_uid(instance_uid, index)
        images.append(_build_image(volume, index, pixels, manifest, header, series, uid, position))
    return images


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
    the loader's default for an image without any (or with a zero one), is not claimed.
    """
    source = volume.datasets[0]
    frame = volume.frame_numbers[0] if volume.frame_numbers else None
    measures = group_macro(functional_groups(source, frame), "PixelMeasuresSequence")
    stated = [holder.get("PixelSpacing") for holder in (source, measures) if holder is not None]
    if not any(positive_values(value) for value in stated if value is not None):
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
