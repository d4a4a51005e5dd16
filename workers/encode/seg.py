"""Encoding a model's segmentation as a DICOM Segmentation (SEG) instance.

The one place that builds SEG objects. It writes Segmentation Storage
(1.2.840.10008.5.1.4.1.1.66.4) in Explicit VR Little Endian, the form every archive
here stores (label-map SEG is a newer SOP class that Orthanc 1.10 and DCMTK 3.6.7
refuse), one segment per manifest segment, coded from the manifest. Its type is the
manifest's ``outputs.segmentation_type``: BINARY from the label volume, or FRACTIONAL
(PROBABILITY, 255 standing for 1) from each segment's probability map.

What it shares with the SR and the SC images (UIDs, equipment, dates, source
headers) comes from :mod:`workers.encode.identity`.
"""

from __future__ import annotations

import re

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from models.manifest import ModelManifest, SegmentationType
from workers.encode.codes import ALGORITHM_FAMILY, coded
from workers.encode.identity import (
    LO_LENGTH,
    MANUFACTURER,
    content_datetime,
    default_series_number,
    device_serial_number,
    make_deterministic,
    result_description,
    segment_tracking_uid,
    software_versions,
    source_headers,
)
from workers.errors import EncodingError
from workers.pixels import functional_groups, group_macro
from workers.volume import Volume

# A FRACTIONAL SEG stores a probability of 1 as this value (8 bits per pixel).
MAX_FRACTIONAL_VALUE = 255


def encode_segmentation(
    volume: Volume,
    labels: np.ndarray,
    manifest: ModelManifest,
    series_uid: str,
    instance_uid: str,
    *,
    series_number: int | None = None,
    segment_probabilities: np.ndarray | None = None,
) -> hd.seg.Segmentation:
    """A Segmentation of the model's output on the source images of ``volume``.

    BINARY from ``labels`` (same shape as the volume), which holds the manifest's
    segment label values, 0 for background. FRACTIONAL when the manifest asks for it,
    from ``segment_probabilities`` (float, (segments, slices, rows, columns), in
    [0, 1], as ``ModelOutput`` holds them), each rounded to the nearest 1/255;
    ``labels`` is then not read. Segment ``i`` (1-based) is
    ``manifest.outputs.segments[i-1]``; a segment with no voxel is still declared, so
    the SR can report its zero volume. ``series_number`` defaults to the source series
    number plus 1000.

    Raises
    ------
    EncodingError
        When ``labels`` or ``segment_probabilities`` does not fit the volume or the
        manifest, or highdicom refuses the object.
    """
    if not manifest.outputs.segments:
        raise EncodingError(f"model {manifest.name} declares no segments to encode")
    fractional = manifest.outputs.segmentation_type is SegmentationType.FRACTIONAL
    probabilities = None
    if fractional:
        probabilities = _checked_probabilities(volume, segment_probabilities, manifest)
        segment_numbers = _frame_layout(_frames_present(probabilities), volume.shape)
    else:
        segment_numbers = _segment_number_array(volume, labels, manifest)
    any_voxel = bool(segment_numbers.any())
    pixel_array, plane_positions = _as_source_frames(volume, segment_numbers)
    source = volume.datasets[0]
    try:
        segmentation = hd.seg.Segmentation(
            source_images=source_headers(volume),
            pixel_array=pixel_array,
            plane_positions=plane_positions,
            segment_descriptions=_segment_descriptions(manifest, instance_uid),
            series_instance_uid=series_uid,
            series_number=series_number or default_series_number(source, 0),
            sop_instance_uid=instance_uid,
            instance_number=1,
            # Frames without any voxel of a segment are left out (a lesion model writes a
            # few frames, not slices x segments empty ones; an empty segment stays
            # declared). With no voxel at all highdicom must keep every frame (a SEG
            # needs one); saying so avoids its warning.
            omit_empty_frames=any_voxel,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            **_provenance_arguments(volume, manifest),
            **_type_arguments(fractional),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodingError(f"cannot encode the segmentation as DICOM SEG: {exc}") from exc
    if probabilities is not None:
        _write_fractional_frames(segmentation, probabilities, volume)
    _state_patient_orientation(segmentation, source)
    make_deterministic(segmentation, instance_uid)
    return segmentation


def _state_patient_orientation(segmentation: hd.seg.Segmentation, source: Dataset) -> None:
    """A source without patient geometry (a single image, allowed by the loader): General
    Image then requires Patient Orientation (Type 2C), as the source has it."""
    shared = segmentation.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" not in shared and "PatientOrientation" not in segmentation:
        segmentation.PatientOrientation = source.get("PatientOrientation") or ""


def _segment_descriptions(
    manifest: ModelManifest, instance_uid: str
) -> list[hd.seg.SegmentDescription]:
    """One description per manifest segment, coded from the manifest, made by the model."""
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=spec.name[:LO_LENGTH],
            segmented_property_category=coded(spec.category),
            segmented_property_type=coded(spec.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=manifest.title[:LO_LENGTH],
                family=ALGORITHM_FAMILY,
                version=manifest.version,
                source=manifest.manufacturer[:LO_LENGTH],
            ),
            tracking_uid=segment_tracking_uid(instance_uid, number),
            tracking_id=spec.name[:LO_LENGTH],
        )
        for number, spec in enumerate(manifest.outputs.segments, start=1)
    ]


def _provenance_arguments(volume: Volume, manifest: ModelManifest) -> dict[str, object]:
    """highdicom's Segmentation arguments that say who made the SEG, from what, when."""
    content_date, content_time = content_datetime(volume)
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": manifest.name,
        "software_versions": software_versions(manifest),
        "device_serial_number": device_serial_number(manifest),
        "content_description": result_description(manifest, "segmentation"),
        # Type 2, left empty: the creator is the algorithm named in each segment's
        # algorithm identification, not a person.
        "content_creator_name": None,
        "content_label": _content_label(manifest),
        "series_description": result_description(manifest, "SEG"),
        "content_date": content_date,
        "content_time": content_time,
    }


def _as_source_frames(
    volume: Volume, numbers: np.ndarray
) -> tuple[np.ndarray, list[hd.PlanePositionSequence] | None]:
    """The segment number array arranged as highdicom pairs it with the source frames.

    Single-frame sources pair slice by slice in volume order. A multi-frame source
    pairs ``pixel_array[i]`` with frame ``i + 1``, so slices sorted along the normal
    go back to frame order; should the volume hold only some of the frames, each
    slice instead carries its frame's position, which highdicom matches to the
    source frame it came from. Either way each SEG frame references its source frame.
    """
    if volume.frame_numbers is None:
        return numbers, None
    source = volume.datasets[0]
    frames = np.asarray(volume.frame_numbers, dtype=np.int64)
    count = int(source.get("NumberOfFrames") or 1)
    if len(frames) == count and np.array_equal(np.sort(frames), np.arange(1, count + 1)):
        ordered = np.empty_like(numbers)
        ordered[frames - 1] = numbers
        return ordered, None
    positions = []
    for frame in volume.frame_numbers:
        plane = group_macro(functional_groups(source, frame), "PlanePositionSequence")
        if plane is None or "ImagePositionPatient" not in plane:
            raise EncodingError(f"frame {frame} of the source has no Plane Position")
        positions.append(
            hd.PlanePositionSequence(
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                image_position=[float(v) for v in plane.ImagePositionPatient],
            )
        )
    return numbers, positions


def _content_label(manifest: ModelManifest) -> str:
    """A Code String (16 characters of A-Z, 0-9, _ and space) naming the model."""
    return re.sub(r"[^A-Z0-9_ ]", "_", manifest.name.upper())[:16] or "AINODE"


def _segment_number_array(
    volume: Volume, labels: np.ndarray, manifest: ModelManifest
) -> np.ndarray:
    """``labels`` with each manifest label value replaced by its segment number."""
    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise EncodingError(f"label volume has shape {labels.shape}, the series {volume.shape}")
    if labels.dtype.kind not in "iub":
        raise EncodingError(f"label volume must hold integers, not {labels.dtype}")
    segments = manifest.outputs.segments
    if labels.dtype != np.uint8:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > 255:
            raise EncodingError(f"label values {low}..{high} lie outside 0..255")
        labels = labels.astype(np.uint8)
    # Comparisons per segment run at memory speed; a 256-entry lookup (fancy
    # indexing) is ten times slower on a CT volume, so it is only the fallback
    # for models with many segments.
    if len(segments) > 8:
        lookup = np.zeros(256, dtype=np.uint8)
        for number, spec in enumerate(segments, start=1):
            lookup[spec.label] = number
        numbers = lookup[labels]
        known = int(np.count_nonzero(numbers))
    else:
        identity = all(spec.label == number for number, spec in enumerate(segments, start=1))
        numbers = labels if identity else np.zeros_like(labels)
        known = 0
        for number, spec in enumerate(segments, start=1):
            mask = labels == spec.label
            known += int(np.count_nonzero(mask))
            if not identity:
                numbers[mask] = number
    if known != int(np.count_nonzero(labels)):
        declared = np.array([spec.label for spec in segments], dtype=np.uint8)
        unknown = np.unique(labels[(labels != 0) & ~np.isin(labels, declared)])
        raise EncodingError(
            f"label volume holds values {[int(v) for v in unknown]} that model "
            f"{manifest.name} does not declare"
        )
    return numbers


# FRACTIONAL ---------------------------------------------------------------------
#
# highdicom takes probabilities as a float (slices, rows, columns, segments) array and
# checks it with np.unique, which sorts a copy of every value: for 500 x 512 x 512 and
# 10 segments, 42 s and 7.4 GiB beyond the input (tests/bench/encode.py), against 2 s
# and 0.5 GiB this way. So highdicom is given a stand-in label map, in which each
# (slice, segment) frame that holds any probability is marked by one pixel: it keeps
# exactly those frames and writes their references, positions and segment
# identification as for a BINARY SEG. The node then writes each frame's quantised
# probabilities in its place.


def _type_arguments(fractional: bool) -> dict[str, object]:
    """highdicom's Segmentation arguments that set the SEG's type."""
    if not fractional:
        return {"segmentation_type": hd.seg.SegmentationTypeValues.BINARY}
    return {
        "segmentation_type": hd.seg.SegmentationTypeValues.FRACTIONAL,
        "fractional_type": hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        "max_fractional_value": MAX_FRACTIONAL_VALUE,
    }


def _quantised(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as stored values: the nearest multiple of 1/255."""
    return np.rint(probabilities * np.float32(MAX_FRACTIONAL_VALUE)).astype(np.uint8)


def _checked_probabilities(
    volume: Volume, probabilities: np.ndarray | None, manifest: ModelManifest
) -> np.ndarray:
    """``probabilities`` as float32 once it fits the volume and the manifest."""
    if probabilities is None:
        raise EncodingError(
            f"model {manifest.name} asks for a fractional SEG but inference gave no "
            "segment probabilities"
        )
    probabilities = np.asarray(probabilities)
    expected = (len(manifest.outputs.segments), *volume.shape)
    if probabilities.shape != expected:
        raise EncodingError(
            f"segment probabilities have shape {probabilities.shape}, expected {expected} "
            "(segments, slices, rows, columns)"
        )
    if probabilities.dtype.kind != "f":
        raise EncodingError(f"segment probabilities must be floats, not {probabilities.dtype}")
    probabilities = probabilities.astype(np.float32, copy=False)
    low, high = float(probabilities.min()), float(probabilities.max())
    # Comparisons with NaN are false, so NaN anywhere is refused here too.
    if not (low >= 0.0 and high <= 1.0):
        raise EncodingError(f"segment probabilities {low}..{high} lie outside 0..1")
    return probabilities


def _frames_present(probabilities: np.ndarray) -> np.ndarray:
    """(segments, slices): whether the frame holds a probability that is stored as > 0.

    Rounding is monotonic, so a frame's largest probability decides; the maxima cost
    one pass over the array and no copy of it.
    """
    return _quantised(probabilities.max(axis=(2, 3))) > 0


def _frame_layout(present: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A label map in which segment ``s`` marks pixel ``s - 1`` of every slice it is in."""
    segments = present.shape[0]
    rows, columns = shape[1], shape[2]
    if segments > rows * columns:
        raise EncodingError(
            f"{segments} segments cannot be laid out on frames of {rows} x {columns} pixels"
        )
    layout = np.zeros(shape, dtype=np.uint8)
    flat = layout.reshape(shape[0], rows * columns)
    for index in range(segments):
        flat[present[index], index] = index + 1
    return layout


def _write_fractional_frames(
    segmentation: hd.seg.Segmentation, probabilities: np.ndarray, volume: Volume
) -> None:
    """Replace the stand-in frames with each frame's quantised probabilities.

    Each frame is found by what highdicom wrote for it: its segment number and the
    source image (or frame) it derives from.
    """
    shared = segmentation.SharedFunctionalGroupsSequence[0]
    slices = _source_slices(volume)
    frames = list(segmentation.PerFrameFunctionalGroupsSequence)
    del segmentation.PixelData
    pixels = np.empty((len(frames), segmentation.Rows, segmentation.Columns), dtype=np.uint8)
    for index, groups in enumerate(frames):
        identification = groups.get("SegmentIdentificationSequence") or shared.get(
            "SegmentIdentificationSequence"
        )
        segment = int(identification[0].ReferencedSegmentNumber)
        pixels[index] = _quantised(probabilities[segment - 1, _frame_slice(groups, slices)])
    data = pixels.tobytes()
    # Pixel Data has an even length; highdicom pads with ASCII "0", a 0 byte is cleaner.
    segmentation.PixelData = data + b"\0" if len(data) % 2 else data
    # Probabilities of several segments may all be above 0 at a pixel; highdicom
    # says so for a float array, but took the stand-in map for non-overlapping.
    segmentation.SegmentsOverlap = "UNDEFINED" if probabilities.shape[0] > 1 else "NO"


def _source_slices(volume: Volume) -> dict[tuple[str, int | None], int]:
    """Slice index of each source image, or (instance, frame number) of a multi-frame one."""
    if volume.frame_numbers is None:
        return {(str(ds.SOPInstanceUID), None): i for i, ds in enumerate(volume.datasets)}
    uid = str(volume.datasets[0].SOPInstanceUID)
    return {(uid, frame): i for i, frame in enumerate(volume.frame_numbers)}


def _frame_slice(groups: Dataset, slices: dict[tuple[str, int | None], int]) -> int:
    """The volume slice a SEG frame derives from, by its Derivation Image reference."""
    if len(slices) == 1:
        return 0
    for derivation in groups.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            frame = source.get("ReferencedFrameNumber")
            key = (str(source.ReferencedSOPInstanceUID), int(frame) if frame else None)
            if key in slices:
                return slices[key]
    raise EncodingError("a SEG frame references no source image of the series")
