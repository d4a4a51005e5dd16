"""What every result shares (``workers.encode.identity``): UIDs, entities, source headers.

The SEG and SR of one job belong to the source's patient and study as dcentvfy sees
them, are the same bytes on a re-run, and encode from archives' images that lack
optional patient and study values or come from real scanners.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from tests.encoding import (
    Encoded,
    Series,
    assert_valid_iod,
    encode,
    run_tool,
    segmentation_manifest,
    to_bytes,
)
from tests.factories import make_ct_series, write_series
from workers.encode.seg import encode_segmentation
from workers.encode.sr import encode_report
from workers.load.series import load_series
from workers.volume import ModelOutput


def test_source_seg_and_sr_are_consistent_entities(series: Series, encoded: Encoded) -> None:
    output = run_tool("dcentvfy", *series.paths, encoded.seg_path, encoded.sr_path)

    assert [line for line in output.splitlines() if "Error" in line] == []


def test_same_inputs_give_identical_bytes(series: Series, encoded: Encoded) -> None:
    manifest = segmentation_manifest()
    uids = encoded.uids
    seg = encode_segmentation(
        series.volume, series.labels, manifest, uids.seg_series, uids.seg_instance
    )
    sr = encode_report(
        series.volume,
        manifest,
        ModelOutput(labels=series.labels),
        seg,
        uids.sr_series,
        uids.sr_instance,
    )

    assert seg.SOPInstanceUID == encoded.seg.SOPInstanceUID == uids.seg_instance
    assert sr.SOPInstanceUID == encoded.sr.SOPInstanceUID == uids.sr_instance
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
