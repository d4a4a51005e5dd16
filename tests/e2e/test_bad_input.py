"""Bad input does not stop the node, loses nothing, and never reaches the archive.

A truncated image, an image without pixel data, non-image objects (an SR, an RT plan)
and unreadable bytes are sent straight to a running node. Unreadable bytes get a
C-STORE failure status; everything else is kept, and the reason it was not analysed
is visible in the API. The archive (a real Orthanc) receives nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from node.status import StoreStatus
from tests.node_process import start_node, wait_for
from tests.orthanc import Orthanc
from tests.scu import send_raw

pytestmark = pytest.mark.e2e


def sample(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom's test file {name} is missing"
    return Path(path)


def make_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    ct = sample("CT_small.dcm")
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(ct.read_bytes()[:-4000])

    no_pixels = dcmread(ct)
    del no_pixels.PixelData
    no_pixels.SeriesInstanceUID = no_pixels.SeriesInstanceUID + ".7"
    no_pixels.SOPInstanceUID = no_pixels.SOPInstanceUID + ".7"
    no_pixels.file_meta.MediaStorageSOPInstanceUID = no_pixels.SOPInstanceUID
    no_pixels_path = folder / "no-pixels.dcm"
    no_pixels.save_as(no_pixels_path)

    # pydicom's RT plan names a different SOP Instance UID in its file meta than in
    # its data set: sent as is, that mismatch is refused; a consistent copy is kept.
    rtplan = dcmread(sample("rtplan.dcm"))
    rtplan.file_meta.MediaStorageSOPInstanceUID = rtplan.SOPInstanceUID
    rtplan_path = folder / "rtplan.dcm"
    rtplan.save_as(rtplan_path)

    garbage = folder / "garbage.dcm"
    head = ct.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(head[140:144], "little")  # preamble, DICM, group length
    garbage.write_bytes(head[:meta_end] + b"\x08\x00\x16\x00\xff\xff\xff\x7f" + b"\x01" * 64)
    return {
        "truncated": truncated,
        "no_pixels": no_pixels_path,
        "sr": sample("test-SR.dcm"),
        "rtplan": rtplan_path,
        "garbage": garbage,
        "mismatched": sample("rtplan.dcm"),
    }


def test_bad_input_is_refused_or_explained(tmp_path: Path, orthanc: Orthanc) -> None:
    inputs = make_inputs(tmp_path / "inputs")
    node = start_node(tmp_path / "node", archive=orthanc.destination)
    dicom_port = node.dicom_port
    try:
        statuses = {
            name: int(send_raw("127.0.0.1", dicom_port, "AINODE", path).Status)
            for name, path in inputs.items()
        }
        assert statuses.pop("garbage") == StoreStatus.CANNOT_UNDERSTAND
        assert statuses.pop("mismatched") == StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        assert set(statuses.values()) == {StoreStatus.SUCCESS}, statuses

        def explained() -> tuple[list, list] | None:
            studies = node.get("/api/studies")
            jobs = node.get("/api/jobs")
            series = [s for study in studies for s in study["series"]]  # type: ignore[union-attr]
            settled = all(s["state"] != "receiving" for s in series) and all(
                j["state"] in ("failed", "succeeded")
                for j in jobs  # type: ignore[union-attr]
            )
            return (series, jobs) if settled and len(series) == 4 else None

        series, jobs = wait_for(explained, timeout=120, what="every series to be explained")
        by_modality = {}
        for s in series:
            by_modality.setdefault(s["modality"], []).append(s)
        for modality in ("SR", "RTPLAN"):
            (item,) = by_modality[modality]
            assert item["state"] == "no_model"
            assert "no model accepts" in item["state_reason"]
        # Both CT series were routed; every job on them failed with a readable reason.
        assert {s["state"] for s in by_modality["CT"]} == {"routed"}
        assert jobs and all(job["state"] == "failed" for job in jobs), jobs
        reasons = " | ".join(job["error"] for job in jobs)
        print("job reasons:", reasons)
        assert "pixel data" in reasons.lower()
        assert "internal error" not in reasons.lower(), reasons
        assert node.get("/healthz")
    finally:
        node.stop()
    # Nothing was sent to the archive.
    assert orthanc.get("/instances") == []
