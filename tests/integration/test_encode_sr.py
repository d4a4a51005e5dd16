"""SR encoding (``workers.encode.sr``), checked by validators nobody on this project wrote.

The TID 1500 report on a CT of a sphere is validated with dicom3tools, rendered with
DCMTK's ``dsrdump``, and read back through bytes with pydicom and highdicom.
"""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from node.uids import derive_uid
from tests.encoding import (
    COMPREHENSIVE_3D_SR,
    NODULE,
    SEGMENTATION_STORAGE,
    Encoded,
    Series,
    assert_valid_iod,
    classification_manifest,
    encode,
    run_tool,
    segmentation_manifest,
    to_bytes,
)
from tests.factories import MASS
from workers.encode import codes
from workers.encode.identity import ResultUIDs, class_tracking_uid
from workers.encode.sr import encode_report
from workers.errors import EncodingError
from workers.volume import ModelOutput


def test_sr_passes_dciodvfy(encoded: Encoded) -> None:
    assert_valid_iod(encoded.sr_path)


def test_dsrdump_renders_a_sensible_report_tree(encoded: Encoded) -> None:
    tree = run_tool("dsrdump", "-v", "+Pt", encoded.sr_path)

    for expected in (
        "Imaging Measurement Report",
        'Observer Type")=(121007,DCM,"Device")',
        '"Device Observer Name")="Test sphere segmenter"',
        '(25045-6,LN,"CT unspecified body region")',
        '"Image Library"',
        "TID 1411",
        '"Tracking Identifier")="Sphere lesion"',
        '"Finding")=(4147007,SCT,"Mass")',
        '"Volume")=',
        '(cm3,UCUM,"cubic centimeter")',
        '"Referenced Segment")=(SG image,,1)',
        '"Referenced Segment")=(SG image,,2)',
        "Source Series for Segmentation",
        '(123110,DCM,"Artificial Intelligence")',
        "NOT FOR CLINICAL USE",
    ):
        assert expected in tree, f"{expected!r} missing from the rendered SR"


def test_single_segment_seg_and_its_report(series: Series, tmp_path: Path) -> None:
    result = encode(series, segmentation_manifest(labels=(3,)), series.labels, tmp_path)

    assert_valid_iod(result.seg_path)
    assert_valid_iod(result.sr_path)
    groups = hd.sr.srread(result.sr_path).content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 1
    assert groups[0].referenced_segment.referenced_segment_numbers == [1]


def test_sr_reports_each_segment_volume_and_references_the_seg(
    series: Series, encoded: Encoded
) -> None:
    manifest = segmentation_manifest()
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(to_bytes(encoded.sr))))

    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.SOPInstanceUID == encoded.uids.sr_instance
    assert sr.SeriesInstanceUID == encoded.uids.sr_series
    assert "NOT FOR CLINICAL USE" in sr.SeriesDescription
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == (
        "COMPLETE",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    source = series.volume.datasets[0]
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber"):
        assert sr[keyword].value == source[keyword].value

    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [group.tracking_identifier for group in groups] == [
        spec.name for spec in manifest.outputs.segments
    ]
    for number, (group, spec) in enumerate(
        zip(groups, manifest.outputs.segments, strict=True), start=1
    ):
        expected_ml = float(np.count_nonzero(series.labels == spec.label)) * (
            series.volume.voxel_volume_ml
        )
        measurement = group.get_measurements(name=codes.VOLUME)[0]
        assert measurement.value == pytest.approx(expected_ml, rel=1e-12)
        assert measurement.unit.value == "cm3"
        assert group.finding_type.value == spec.type.value
        assert group.finding_category.value == spec.category.value
        reference = group.referenced_segment
        assert reference.referenced_sop_instance_uid == encoded.seg.SOPInstanceUID
        assert reference.referenced_sop_class_uid == SEGMENTATION_STORAGE
        assert reference.referenced_segment_numbers == [number]
        assert reference.source_series_for_segmentation.value == source.SeriesInstanceUID
        # The SR and the SEG track a segment by the same UID.
        assert group.tracking_uid == encoded.seg.SegmentSequence[number - 1].TrackingUID
    assert groups[0].get_measurements(name=codes.VOLUME)[0].value > 0
    assert groups[1].get_measurements(name=codes.VOLUME)[0].value == 0


def test_sr_names_the_model_as_device_observer_and_lists_every_source_image(
    series: Series, encoded: Encoded
) -> None:
    sr = hd.sr.srread(io.BytesIO(to_bytes(encoded.sr)))

    (observer,) = sr.content.get_observer_contexts()
    attributes = observer.observer_identifying_attributes
    assert observer.observer_type.value == "121007"
    assert attributes.name == "Test sphere segmenter"
    assert attributes.model_name == "test-sphere-seg"
    assert attributes.manufacturer_name == "ainode"
    assert attributes.serial_number == "test-sphere-seg-1.2.0"

    library = [
        item
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Image Library"
    ]
    assert len(library) == 1
    entries = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for group in library[0].ContentSequence
        for item in group.ContentSequence
        if item.ValueType == "IMAGE"
    ]
    assert sorted(entries) == sorted(ds.SOPInstanceUID for ds in series.volume.datasets)

    evidence = {uids[2] for uids in sr.get_evidence()}  # (study, series, instance, class)
    assert evidence == {ds.SOPInstanceUID for ds in series.volume.datasets} | {
        encoded.seg.SOPInstanceUID
    }


def test_classification_finding_follows_the_threshold(series: Series, tmp_path: Path) -> None:
    manifest = classification_manifest()
    uids = ResultUIDs.of_volume(series.volume, manifest)
    # mass 0.5 reaches its threshold 0.5 exactly; nodule 0.2 stays under 0.3.
    output = ModelOutput(probabilities={"mass": 0.5, "nodule": 0.2})

    sr = encode_report(series.volume, manifest, output, None, uids.sr_series, uids.sr_instance)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)

    assert_valid_iod(path)
    run_tool("dsrdump", "-v", "+Pt", path)
    read = hd.sr.srread(path)
    assert "NOT FOR CLINICAL USE" not in read.SeriesDescription
    groups = read.content.get_image_measurement_groups()
    assert [group.tracking_identifier for group in groups] == ["mass", "nodule"]
    expected = {"mass": (0.5, MASS, "52101004"), "nodule": (0.2, NODULE, "272519000")}
    for group in groups:
        probability, finding, presence = expected[group.tracking_identifier]
        assert group.tracking_uid == class_tracking_uid(uids.sr_instance, group.tracking_identifier)
        assert group.tracking_uid == derive_uid(
            "ainode-class-tracking", uids.sr_instance, group.tracking_identifier
        )
        assert group.finding_type.value == finding["value"]
        (measurement,) = group.get_measurements(name=codes.PROBABILITY)
        assert measurement.value == pytest.approx(probability)
        assert measurement.unit.value == "1"
        evaluations = group.get_qualitative_evaluations(
            name=hd.sr.CodedConcept(finding["value"], finding["scheme"], finding["meaning"])
        )
        assert [evaluation.value.value for evaluation in evaluations] == [presence]


def test_report_of_a_segmentation_model_needs_the_seg(series: Series) -> None:
    with pytest.raises(EncodingError, match="no SEG"):
        encode_report(
            series.volume,
            segmentation_manifest(),
            ModelOutput(labels=series.labels),
            None,
            "1.2.3",
            "1.2.3.4",
        )


def test_report_needs_every_class_probability(series: Series) -> None:
    with pytest.raises(EncodingError, match="nodule"):
        encode_report(
            series.volume,
            classification_manifest(),
            ModelOutput(probabilities={"mass": 0.9}),
            None,
            "1.2.3",
            "1.2.3.4",
        )
