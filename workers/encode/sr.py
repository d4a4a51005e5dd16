"""Encoding a model's findings as a TID 1500 Measurement Report (Comprehensive 3D SR).

The one place that builds SR objects. The report names the model as a device
observer, references every source image in its image library, and holds one
measurement group per manifest output:

- per class (classification models): a TID 1501 group with the class's finding as
  "Finding", the model's probability (DCM 122157 "Probability", no units) and a
  qualitative evaluation "<finding> = Present | Absent" from the manifest threshold;
- per segment (segmentation models): a TID 1411 group referencing the segment in the
  SEG, with its segmented property category and type as finding category and
  finding, and its volume (SCT "Volume", cm3 = ml) counted from the label volume.

Codes and their reasons are in :mod:`workers.encode.codes`; UIDs and what the report
shares with the other results in :mod:`workers.encode.identity`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes as dicom_codes

from models.manifest import ClassSpec, ModelManifest
from workers.encode.codes import (
    ABSENT,
    ALGORITHM_FAMILY,
    CUBIC_CENTIMETER,
    NO_UNITS,
    PRESENT,
    PROBABILITY,
    VOLUME,
    coded,
    procedure_reported,
)
from workers.encode.identity import (
    MANUFACTURER,
    class_tracking_uid,
    content_datetime,
    default_series_number,
    device_observer_uid,
    device_serial_number,
    make_deterministic,
    result_description,
    segment_tracking_uid,
    software_versions,
    source_headers,
    source_instances,
)
from workers.errors import EncodingError
from workers.volume import ModelOutput, Volume

_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
# TID 1601: an image library entry is an IMAGE item named SCT "Source", as highdicom
# names them.
_SOURCE = hd.sr.CodedConcept("260753009", "SCT", "Source")
# CID 33 "Modality": the coded form of a source's Modality for the library group.
_MODALITY_CODES = {code.value: code for code in dicom_codes.cid33.concepts.values()}

MeasurementGroup = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


def encode_report(
    volume: Volume,
    manifest: ModelManifest,
    output: ModelOutput,
    segmentation: Dataset | None,
    series_uid: str,
    instance_uid: str,
    *,
    series_number: int | None = None,
    supersedes: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR with the TID 1500 report of ``output``.

    ``segmentation`` is the SEG encoded from ``output.labels`` (required when the
    manifest declares segments). ``series_number`` defaults to the source series
    number plus 1001. ``supersedes`` holds the headers of earlier reports of the same
    model on the same series (a re-run after new instances arrived): they are
    referenced in the Predecessor Documents Sequence, so an archive and a reader know
    this report replaces them.

    Raises
    ------
    EncodingError
        When the output does not match the manifest (a class without probability,
        segments without labels or SEG) or highdicom refuses the object.
    """
    try:
        sr = _build_report(
            volume, manifest, output, segmentation, series_uid, instance_uid, series_number,
            list(supersedes),
        )  # fmt: skip
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodingError(f"cannot encode the report as DICOM SR: {exc}") from exc
    _insert_image_library(sr, source_instances(volume))
    make_deterministic(sr, instance_uid)
    return sr


def _build_report(
    volume: Volume,
    manifest: ModelManifest,
    output: ModelOutput,
    segmentation: Dataset | None,
    series_uid: str,
    instance_uid: str,
    series_number: int | None,
    supersedes: list[Dataset],
) -> hd.sr.Comprehensive3DSR:
    source = volume.datasets[0]
    algorithm = hd.sr.AlgorithmIdentification(
        name=manifest.title,
        version=manifest.version,
        family=ALGORITHM_FAMILY,
        manufacturer=manifest.manufacturer,
    )
    groups: list[MeasurementGroup] = [
        _class_group(spec, output, manifest, instance_uid) for spec in manifest.outputs.classes
    ]
    evidence = source_headers(volume)
    if manifest.outputs.segments:
        if segmentation is None or output.labels is None:
            raise EncodingError(
                f"model {manifest.name} declares segments but the report got "
                f"{'no label volume' if output.labels is None else 'no SEG'} to measure"
            )
        groups.extend(_segment_groups(volume, manifest, output.labels, segmentation, algorithm))
        evidence.append(segmentation)
    if not groups:
        raise EncodingError(f"model {manifest.name} declares no outputs to report")

    content_date, content_time = content_datetime(volume)
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=_measurement_report(manifest, str(source.get("Modality", "")), groups),
        series_instance_uid=series_uid,
        series_number=series_number or default_series_number(source, 1),
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        # Complete as written, but preliminary and unverified: no person has
        # reviewed what the model reports.
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=result_description(manifest, "SR"),
        manufacturer_model_name=manifest.name,
        software_versions=software_versions(manifest),
        device_serial_number=device_serial_number(manifest),
        content_date=content_date,
        content_time=content_time,
        previous_versions=supersedes or None,
    )


def _measurement_report(
    manifest: ModelManifest, modality: str, groups: list[MeasurementGroup]
) -> hd.sr.MeasurementReport:
    """The TID 1500 content: the model as device observer, and its measurement groups."""
    observer = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_observer_uid(manifest),
        name=manifest.title,
        manufacturer_name=manifest.manufacturer,
        model_name=manifest.name,
        serial_number=device_serial_number(manifest),
    )
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=dicom_codes.cid270.Device,
                observer_identifying_attributes=observer,
            )
        ),
        procedure_reported=procedure_reported(modality),
        imaging_measurements=groups,
        language_of_content_item_and_descendants=hd.sr.LanguageOfContentItemAndDescendants(
            hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
        ),
    )


def _insert_image_library(sr: hd.sr.Comprehensive3DSR, images: list[Dataset]) -> None:
    """Add the TID 1600 Image Library, referencing every source image, to the report.

    highdicom's ``MeasurementReport(referenced_images=...)`` writes some 16
    descriptors per image and then deep-copies and re-parses the whole tree: about
    12 s for 300 slices here. The descriptors are optional (TID 1602 is a user
    option), so each entry is a bare reference, grouped by the descriptors all
    images share (modality, frame of reference), and the library goes in after
    construction, before the Imaging Measurements container as TID 1500 orders it.
    """
    source = images[0]
    group = hd.sr.ContainerContentItem(
        name=dicom_codes.DCM.ImageLibraryGroup,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    group.ContentSequence = hd.sr.ContentSequence()
    modality = _MODALITY_CODES.get(str(source.get("Modality", "")))
    if modality is not None:
        group.ContentSequence.append(
            hd.sr.CodeContentItem(
                name=dicom_codes.DCM.Modality,
                value=modality,
                relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
            )
        )
    if "FrameOfReferenceUID" in source:
        group.ContentSequence.append(
            hd.sr.UIDRefContentItem(
                name=dicom_codes.DCM.FrameOfReferenceUID,
                value=str(source.FrameOfReferenceUID),
                relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
            )
        )
    for image in images:
        group.ContentSequence.append(
            hd.sr.ImageContentItem(
                name=_SOURCE,
                referenced_sop_class_uid=image.SOPClassUID,
                referenced_sop_instance_uid=image.SOPInstanceUID,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    library = hd.sr.ContainerContentItem(
        name=dicom_codes.DCM.ImageLibrary,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    library.ContentSequence = hd.sr.ContentSequence([group])
    root = sr.ContentSequence
    position = next(
        index
        for index, item in enumerate(root)
        if item.ConceptNameCodeSequence[0].CodeValue == dicom_codes.DCM.ImagingMeasurements.value
    )
    root.insert(position, library)


def _class_group(
    spec: ClassSpec, output: ModelOutput, manifest: ModelManifest, instance_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    if spec.name not in output.probabilities:
        raise EncodingError(
            f"model {manifest.name} returned no probability for class {spec.name!r}"
        )
    probability = float(output.probabilities[spec.name])
    if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
        raise EncodingError(
            f"probability {probability} of class {spec.name!r} is not between 0 and 1"
        )
    finding = coded(spec.finding)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=class_tracking_uid(instance_uid, spec.name), identifier=spec.name
        ),
        finding_type=finding,
        # The threshold is how the probability became Present or Absent, so it is
        # recorded as a parameter of the algorithm that applied it.
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=manifest.title,
            version=manifest.version,
            family=ALGORITHM_FAMILY,
            manufacturer=manifest.manufacturer,
            parameters=[f"threshold={spec.threshold:g}"],
        ),
        measurements=[hd.sr.Measurement(name=PROBABILITY, value=probability, unit=NO_UNITS)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=finding, value=PRESENT if probability >= spec.threshold else ABSENT
            )
        ],
    )


def _segment_groups(
    volume: Volume,
    manifest: ModelManifest,
    labels: np.ndarray,
    segmentation: Dataset,
    algorithm: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    segments = manifest.outputs.segments
    declared = list(segmentation.get("SegmentSequence", []))
    if str(segmentation.get("SOPClassUID", "")) != _SEGMENTATION_STORAGE or len(declared) != len(
        segments
    ):
        raise EncodingError(
            f"the SEG given to the report does not hold the {len(segments)} segments of "
            f"model {manifest.name}"
        )
    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise EncodingError(f"label volume has shape {labels.shape}, the series {volume.shape}")
    source_series = hd.sr.SourceSeriesForSegmentation(str(volume.datasets[0].SeriesInstanceUID))

    groups = []
    for number, spec in enumerate(segments, start=1):
        item = declared[number - 1]
        tracking_uid = str(
            item.get("TrackingUID") or segment_tracking_uid(segmentation.SOPInstanceUID, number)
        )
        volume_ml = float(np.count_nonzero(labels == spec.label)) * volume.voxel_volume_ml
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=tracking_uid, identifier=spec.name
                ),
                # Built by hand: ReferencedSegment.from_segmentation raises on a
                # single-segment SEG in highdicom 0.28.
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=segmentation.SOPClassUID,
                    sop_instance_uid=segmentation.SOPInstanceUID,
                    segment_number=number,
                    source_series=source_series,
                ),
                finding_category=coded(spec.category),
                finding_type=coded(spec.type),
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(name=VOLUME, value=volume_ml, unit=CUBIC_CENTIMETER)
                ],
            )
        )
    return groups
