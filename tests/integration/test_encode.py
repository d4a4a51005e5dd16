"""SEG and SR encoding, checked by validators nobody on this project wrote.

A synthetic CT series with a sphere goes through load -> encode; the SEG and SR are
written to files, validated with dicom3tools (``dciodvfy``, ``dcentvfy``), rendered
with DCMTK's ``dsrdump``, and read back through bytes with pydicom and highdicom.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file

from models.manifest import ModelManifest
from node.uids import derive_uid, result_uids
from tests.factories import (
    ANATOMY,
    LESION,
    LUNG,
    MASS,
    fake_manifest,
    make_ct_series,
    write_series,
)
from workers.encode import codes
from workers.encode.seg import encode_segmentation
from workers.encode.sr import class_tracking_uid, encode_report
from workers.errors import EncodingError
from workers.load import load_series
from workers.volume import ModelOutput, Volume

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def tool(name: str) -> str:
    """The path of a validator; a machine without it fails the test, never skips it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install dicom3tools dcmtk)")
    return path


def run_tool(*args: str | Path) -> str:
    result = subprocess.run(
        [tool(str(args[0])), *map(str, args[1:])], capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    print(f"$ {' '.join(map(str, args))}\n{output}")
    return output


def assert_valid_iod(path: Path) -> None:
    output = run_tool("dciodvfy", path)
    errors = [line for line in output.splitlines() if "Error" in line]
    assert errors == [], f"dciodvfy reports errors for {path.name}:\n" + "\n".join(errors)


NODULE = {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"}


def segmentation_manifest(*, labels: tuple[int, ...] = (3, 7)) -> ModelManifest:
    """Label 3 is a lesion (the sphere), label 7 the lung (left empty by the tests)."""
    specs = [
        {"label": 3, "name": "Sphere lesion", "category": LESION, "type": MASS},
        {"label": 7, "name": "Lung", "category": ANATOMY, "type": LUNG},
    ]
    return fake_manifest(
        "test-sphere-seg",
        "segmentation",
        version="1.2.0",
        title="Test sphere segmenter",
        demonstration=True,
        segments=[s for s in specs if s["label"] in labels],
    )


def classification_manifest() -> ModelManifest:
    return fake_manifest(
        "test-classifier",
        "classification",
        version="0.3",
        title="Test finding classifier",
        manufacturer="ainode tests",
        demonstration=False,
        classes=[
            {"name": "mass", "finding": MASS, "threshold": 0.5},
            {"name": "nodule", "finding": NODULE, "threshold": 0.3},
        ],
    )


@dataclass
class Series:
    volume: Volume
    paths: list[Path]
    labels: np.ndarray  # manifest label values: 3 in the sphere, 0 elsewhere


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    z, y, x = np.mgrid[:12, :64, :64]
    sphere = ((z - 6) * 2.5) ** 2 + ((y - 30) * 0.7) ** 2 + ((x - 34) * 0.7) ** 2 < 10.0**2
    hu = np.where(sphere, 45.0, -850.0)
    paths = write_series(
        make_ct_series(hu, (2.5, 0.7, 0.7), origin=(-22.4, -22.4, 100.0)),
        tmp_path_factory.mktemp("ct"),
    )
    # Loading drops the source pixel data: the encoders must work from headers only.
    volume = load_series(paths)
    return Series(volume, paths, np.where(sphere, 3, 0).astype(np.uint8))


@dataclass
class Encoded:
    seg: Dataset
    sr: Dataset
    seg_path: Path
    sr_path: Path
    uids: dict[str, str]


def encode(
    series: Series,
    manifest: ModelManifest,
    labels: np.ndarray,
    directory: Path,
    probabilities: dict[str, float] | None = None,
) -> Encoded:
    uids = result_uids(
        [ds.SOPInstanceUID for ds in series.volume.datasets], manifest.name, manifest.version
    )
    seg = encode_segmentation(
        series.volume, labels, manifest, uids["seg_series"], uids["seg_instance"]
    )
    output = ModelOutput(labels=labels, probabilities=probabilities or {})
    sr = encode_report(series.volume, manifest, output, seg, uids["sr_series"], uids["sr_instance"])
    seg_path, sr_path = directory / "seg.dcm", directory / "sr.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    sr.save_as(sr_path, enforce_file_format=True)
    return Encoded(seg, sr, seg_path, sr_path, uids)


@pytest.fixture(scope="module")
def encoded(series: Series, tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    return encode(
        series, segmentation_manifest(), series.labels, tmp_path_factory.mktemp("results")
    )


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# Validators ---------------------------------------------------------------------


def test_seg_passes_dciodvfy(encoded: Encoded) -> None:
    assert_valid_iod(encoded.seg_path)


def test_sr_passes_dciodvfy(encoded: Encoded) -> None:
    assert_valid_iod(encoded.sr_path)


def test_source_seg_and_sr_are_consistent_entities(series: Series, encoded: Encoded) -> None:
    output = run_tool("dcentvfy", *series.paths, encoded.seg_path, encoded.sr_path)

    assert [line for line in output.splitlines() if "Error" in line] == []


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


# SEG round trip ---------------------------------------------------------------


def test_seg_round_trips_with_segments_codes_and_references(
    series: Series, encoded: Encoded
) -> None:
    manifest = segmentation_manifest()
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(to_bytes(encoded.seg))))

    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert seg.SegmentationType == "BINARY"
    assert seg.SOPInstanceUID == encoded.uids["seg_instance"]
    assert seg.SeriesInstanceUID == encoded.uids["seg_series"]
    assert seg.Manufacturer == "ainode"
    assert "NOT FOR CLINICAL USE" in seg.SeriesDescription
    assert len(seg.SeriesDescription) <= 64
    assert seg.StudyInstanceUID == series.volume.datasets[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == series.volume.datasets[0].FrameOfReferenceUID
    assert seg.number_of_segments == 2
    for number, spec in enumerate(manifest.outputs.segments, start=1):
        description = seg.get_segment_description(number)
        assert description.segment_label == spec.name
        assert description.segmented_property_category.value == spec.category.value
        assert description.segmented_property_type == hd.sr.CodedConcept(
            spec.type.value, spec.type.scheme, spec.type.meaning
        )
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = description.algorithm_identification[0]
        assert algorithm.AlgorithmName == manifest.title
        assert algorithm.AlgorithmVersion == manifest.version
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"

    referenced = {
        item.ReferencedSOPInstanceUID
        for series_item in seg.ReferencedSeriesSequence
        for item in series_item.ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in series.volume.datasets}


def test_seg_pixels_reconstruct_the_label_volume_exactly(series: Series, encoded: Encoded) -> None:
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(to_bytes(encoded.seg))))
    numbers = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in series.volume.datasets],
        combine_segments=True,
        relabel=False,
    )
    # Segment numbers back to the manifest's label values (1 -> 3, 2 -> 7).
    labels = np.array([0, 3, 7], dtype=np.uint8)[numbers]

    np.testing.assert_array_equal(labels, series.labels)
    # Only frames holding the sphere are stored; the empty lung segment has none.
    assert seg.NumberOfFrames == int(series.labels.any(axis=(1, 2)).sum())


def test_seg_without_any_voxel_is_still_valid(series: Series, tmp_path: Path) -> None:
    empty = np.zeros_like(series.labels)

    result = encode(series, segmentation_manifest(), empty, tmp_path)

    assert_valid_iod(result.seg_path)
    assert_valid_iod(result.sr_path)
    seg = hd.seg.segread(result.seg_path)
    assert seg.number_of_segments == 2
    assert seg.NumberOfFrames == 2 * series.volume.shape[0]
    volumes = [
        group.get_measurements(name=codes.VOLUME)[0].value
        for group in hd.sr.srread(result.sr_path).content.get_volumetric_roi_measurement_groups()
    ]
    assert volumes == [0.0, 0.0]


def test_single_segment_seg_and_its_report(series: Series, tmp_path: Path) -> None:
    result = encode(series, segmentation_manifest(labels=(3,)), series.labels, tmp_path)

    assert_valid_iod(result.seg_path)
    assert_valid_iod(result.sr_path)
    groups = hd.sr.srread(result.sr_path).content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 1
    assert groups[0].referenced_segment.referenced_segment_numbers == [1]


# SR round trip ----------------------------------------------------------------


def test_sr_reports_each_segment_volume_and_references_the_seg(
    series: Series, encoded: Encoded
) -> None:
    manifest = segmentation_manifest()
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(to_bytes(encoded.sr))))

    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.SOPInstanceUID == encoded.uids["sr_instance"]
    assert sr.SeriesInstanceUID == encoded.uids["sr_series"]
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
    uids = result_uids(
        [ds.SOPInstanceUID for ds in series.volume.datasets], manifest.name, manifest.version
    )
    # mass 0.5 reaches its threshold 0.5 exactly; nodule 0.2 stays under 0.3.
    output = ModelOutput(probabilities={"mass": 0.5, "nodule": 0.2})

    sr = encode_report(
        series.volume, manifest, output, None, uids["sr_series"], uids["sr_instance"]
    )
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
        assert group.tracking_uid == class_tracking_uid(
            uids["sr_instance"], group.tracking_identifier
        )
        assert group.tracking_uid == derive_uid(
            "ainode-class-tracking", uids["sr_instance"], group.tracking_identifier
        )
        assert group.finding_type.value == finding["value"]
        (measurement,) = group.get_measurements(name=codes.PROBABILITY)
        assert measurement.value == pytest.approx(probability)
        assert measurement.unit.value == "1"
        evaluations = group.get_qualitative_evaluations(
            name=hd.sr.CodedConcept(finding["value"], finding["scheme"], finding["meaning"])
        )
        assert [evaluation.value.value for evaluation in evaluations] == [presence]


# Determinism and refusals -------------------------------------------------------


def test_same_inputs_give_identical_bytes(series: Series, encoded: Encoded) -> None:
    manifest = segmentation_manifest()
    uids = encoded.uids
    seg = encode_segmentation(
        series.volume, series.labels, manifest, uids["seg_series"], uids["seg_instance"]
    )
    sr = encode_report(
        series.volume,
        manifest,
        ModelOutput(labels=series.labels),
        seg,
        uids["sr_series"],
        uids["sr_instance"],
    )

    assert seg.SOPInstanceUID == encoded.seg.SOPInstanceUID == uids["seg_instance"]
    assert sr.SOPInstanceUID == encoded.sr.SOPInstanceUID == uids["sr_instance"]
    assert to_bytes(seg) == to_bytes(encoded.seg)
    assert to_bytes(sr) == to_bytes(encoded.sr)
    # Content date and time come from the source series, not the clock.
    assert (str(seg.ContentDate), str(seg.ContentTime)) == ("20240102", "080000")
    assert "InstanceCreationTime" not in seg and "InstanceCreationTime" not in sr


def test_source_without_optional_patient_and_study_values_still_encodes(
    series: Series, tmp_path: Path
) -> None:
    # An anonymised series may lack Type 2 attributes altogether, not just their values.
    datasets = make_ct_series(np.zeros((3, 8, 8)), series_description="stripped")
    for ds in datasets:
        for keyword in (
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
            "AccessionNumber",
            "StudyID",
            "ReferringPhysicianName",
            "SeriesDate",
            "SeriesTime",
        ):
            delattr(ds, keyword)
    volume = load_series(write_series(datasets, tmp_path / "ct"))
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[1, 2:5, 2:5] = 3
    manifest = segmentation_manifest()

    seg = encode_segmentation(volume, labels, manifest, "1.2.3", "1.2.3.4")
    sr = encode_report(volume, manifest, ModelOutput(labels=labels), seg, "1.2.3.5", "1.2.3.6")

    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert_valid_iod(tmp_path / "seg.dcm")
    assert_valid_iod(tmp_path / "sr.dcm")
    assert "AccessionNumber" not in volume.datasets[0]  # the volume's headers are untouched
    assert str(seg.ContentDate) == "20240102"  # from the study, the series having no date


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_real_scanner_image_gets_a_valid_seg_and_sr(name: str, tmp_path: Path) -> None:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"test file {name} is not installed"
    volume = load_series([Path(path)])
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[0, 20:40, 30:50] = 3

    result = encode(Series(volume, [Path(path)], labels), segmentation_manifest(), labels, tmp_path)

    assert_valid_iod(result.seg_path)
    assert_valid_iod(result.sr_path)


def test_single_image_without_geometry_gets_a_valid_seg(tmp_path: Path) -> None:
    ds = make_ct_series(np.zeros((1, 8, 8)), series_description="no geometry")[0]
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    volume = load_series(write_series([ds], tmp_path / "ct"))
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[0, 2:4, 2:4] = 3

    seg = encode_segmentation(volume, labels, segmentation_manifest(), "1.2.3", "1.2.3.4")
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)

    assert_valid_iod(tmp_path / "seg.dcm")


def test_source_without_frame_of_reference_cannot_have_a_seg(
    series: Series, tmp_path: Path
) -> None:
    datasets = make_ct_series(np.zeros((2, 8, 8)), series_description="no frame of reference")
    for ds in datasets:
        del ds.FrameOfReferenceUID
    volume = load_series(write_series(datasets, tmp_path))

    with pytest.raises(EncodingError, match="Frame Of Reference"):
        encode_segmentation(
            volume,
            np.zeros(volume.shape, dtype=np.uint8),
            segmentation_manifest(),
            "1.2.3",
            "1.2.3.4",
        )


def test_many_segments_use_the_lookup_path(series: Series) -> None:
    specs = [
        {"label": 10 + i, "name": f"Part {i}", "category": ANATOMY, "type": LUNG} for i in range(9)
    ]
    manifest = fake_manifest(
        "many", "segmentation", version="1", title="Many parts", accepts={}, segments=specs
    )
    labels = np.zeros_like(series.labels)
    labels[series.labels == 3] = 18  # segment 9

    seg = encode_segmentation(series.volume, labels, manifest, "1.2.3", "1.2.3.4")

    assert seg.number_of_segments == 9
    pixels = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in series.volume.datasets],
        combine_segments=True,
        relabel=False,
    )
    np.testing.assert_array_equal(pixels == 9, series.labels == 3)


def test_undeclared_label_values_are_refused(series: Series) -> None:
    labels = series.labels.copy()
    labels[0, 0, 0] = 5

    with pytest.raises(EncodingError, match=r"values \[5\]"):
        encode_segmentation(series.volume, labels, segmentation_manifest(), "1.2.3", "1.2.3.4")


def test_labels_of_the_wrong_shape_are_refused(series: Series) -> None:
    with pytest.raises(EncodingError, match="shape"):
        encode_segmentation(
            series.volume, series.labels[1:], segmentation_manifest(), "1.2.3", "1.2.3.4"
        )


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


def test_encoding_time_of_a_full_ct_volume() -> None:
    """300 x 512 x 512, two segments: printed for the record, not asserted."""
    # Headers only (the encoders never read source pixels): build tiny images and
    # give them the matrix size of a real CT.
    datasets = make_ct_series(np.zeros((300, 2, 2)), (1.0, 0.7, 0.7))
    for ds in datasets:
        ds.Rows = ds.Columns = 512
        del ds.PixelData
    volume = Volume(
        voxels=np.zeros((300, 512, 512), dtype=np.float32),
        spacing=(1.0, 0.7, 0.7),
        origin=np.zeros(3),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        slice_direction=np.array([0.0, 0.0, 1.0]),
        datasets=datasets,
    )
    z, y, x = np.ogrid[:300, :512, :512]
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[((z - 150) / 60) ** 2 + ((y - 256) / 100) ** 2 + ((x - 200) / 80) ** 2 < 1] = 3
    labels[((z - 100) / 30) ** 2 + ((y - 300) / 40) ** 2 + ((x - 350) / 40) ** 2 < 1] = 7
    manifest = segmentation_manifest()

    start = time.perf_counter()
    seg = encode_segmentation(volume, labels, manifest, "1.2.3", "1.2.3.4")
    seg_done = time.perf_counter()
    sr = encode_report(volume, manifest, ModelOutput(labels=labels), seg, "1.2.3.5", "1.2.3.6")
    sr_done = time.perf_counter()
    seg_bytes, sr_bytes = to_bytes(seg), to_bytes(sr)
    written = time.perf_counter()

    print(
        f"\n300x512x512, 2 segments: SEG {seg_done - start:.2f} s ({seg.NumberOfFrames} frames, "
        f"{len(seg_bytes) / 1e6:.1f} MB), SR {sr_done - seg_done:.2f} s "
        f"({len(sr_bytes) / 1e6:.1f} MB), serialising both {written - sr_done:.2f} s"
    )
