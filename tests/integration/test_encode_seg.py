"""SEG encoding (``workers.encode.seg``), checked by validators nobody on this project wrote.

The SEG of a CT of a sphere is validated with dicom3tools and read back through bytes
with pydicom and highdicom.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.encoding import (
    SEGMENTATION_STORAGE,
    Encoded,
    Series,
    assert_valid_iod,
    encode,
    segmentation_manifest,
    to_bytes,
)
from tests.factories import ANATOMY, LUNG, fake_manifest, make_ct_series, write_series
from workers.encode import codes
from workers.encode.seg import encode_segmentation
from workers.encode.sr import encode_report
from workers.errors import EncodingError
from workers.load.series import load_series
from workers.volume import ModelOutput, Volume


def test_seg_passes_dciodvfy(encoded: Encoded) -> None:
    assert_valid_iod(encoded.seg_path)


def test_seg_round_trips_with_segments_codes_and_references(
    series: Series, encoded: Encoded
) -> None:
    manifest = segmentation_manifest()
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(to_bytes(encoded.seg))))

    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert seg.SegmentationType == "BINARY"
    assert seg.SOPInstanceUID == encoded.uids.seg_instance
    assert seg.SeriesInstanceUID == encoded.uids.seg_series
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
