"""Delivery through the running node to real archives.

- Several destinations on one route: an archive by C-STORE with storage commitment
  (Orthanc commits and reports back on a new association) and a viewer archive by
  DICOMweb STOW-RS that takes no SEG, only the SR and the Secondary Capture overlay.
- A destination that stays down: every attempt fails, the deliveries are
  dead-lettered and the API says so; once it is up, POST /api/jobs/{id}/retry sends
  the results again without analysing again.
- New instances for a series already analysed: the node runs again and the new SR
  names the one it supersedes.

Everything the archives hold afterwards is counted (exactly the expected objects)
and checked with dciodvfy.
"""

from __future__ import annotations

import json
from collections import Counter
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import UID
from sqlalchemy import create_engine, text

from tests.dicom_checks import dcentvfy_errors, dciodvfy_errors
from tests.factories import phantom_study
from tests.node_process import NodeProcess, start_node, wait_for
from tests.orthanc import Orthanc, free_port, start_orthanc

pytestmark = pytest.mark.e2e

KIND = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.88.34": "SR",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
}


def held(archive: Orthanc, check_dir: Path | None = None) -> tuple[Counter[str], list[Dataset]]:
    """What the archive holds, by kind; with ``check_dir``, each passes dciodvfy and
    dcentvfy finds the objects consistent (same patient and study attributes)."""
    datasets = []
    paths = []
    for instance_id in archive.get("/instances"):  # type: ignore[union-attr]
        data = archive.file(instance_id)
        ds = dcmread(BytesIO(data))
        datasets.append(ds)
        if check_dir is not None:
            path = check_dir / f"{instance_id}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            paths.append(path)
            assert dciodvfy_errors(path) == [], f"{KIND.get(ds.SOPClassUID)} {ds.SOPInstanceUID}"
    if paths:
        assert dcentvfy_errors(*paths) == []
    kinds = Counter(KIND.get(str(ds.SOPClassUID), str(ds.SOPClassUID)) for ds in datasets)
    return kinds, datasets


def jobs_settled(node: NodeProcess, count: int, *states: str) -> list | None:
    jobs = node.get("/api/jobs")
    done = len(jobs) == count and all(j["state"] in states for j in jobs)  # type: ignore[arg-type]
    return jobs if done else None  # type: ignore[return-value]


def attempt_outcomes(node: NodeProcess) -> dict[tuple[str, str], list[str]]:
    """(kind, destination) -> the outcomes of its attempts, from the node's database."""
    engine = create_engine(f"sqlite:///{node.data_dir / 'ainode.db'}")
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT r.kind, d.destination, a.outcome FROM delivery_attempt a "
                "JOIN delivery d ON d.id = a.delivery_pk "
                "JOIN result_object r ON r.id = d.result_pk ORDER BY a.id"
            )
        ).all()
    engine.dispose()
    outcomes: dict[tuple[str, str], list[str]] = {}
    for kind, destination, outcome in rows:
        outcomes.setdefault((kind, destination), []).append(outcome)
    return outcomes


def test_several_destinations_with_commitment_and_stow(tmp_path: Path) -> None:
    files = phantom_study(tmp_path, 701, slices=16)
    dicom_port = free_port()
    # The node is declared in the archive, so Orthanc can send its commitment reports.
    archive = start_orthanc(tmp_path / "archive", node_port=dicom_port)
    viewer = start_orthanc(tmp_path / "viewer")
    destinations = [
        {"name": "pacs", "dicom": archive.destination, "storage_commitment": True},
        {"name": "viewer", "stow_url": f"{viewer.url}/dicom-web", "kinds": ["SR", "SC"]},
    ]
    node = start_node(tmp_path / "node", dicom_port, destinations=json.dumps(destinations))
    try:
        Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")
        jobs = wait_for(
            lambda: jobs_settled(node, 2, "succeeded", "failed"), timeout=180,
            what="both jobs delivered everywhere",
        )  # fmt: skip
        assert {j["state"] for j in jobs} == {"succeeded"}, [j["error"] for j in jobs]
        outcomes = attempt_outcomes(node)
    finally:
        node.stop()
        archive_kinds, _ = held(archive, tmp_path / "check-archive")
        viewer_kinds, viewer_objects = held(viewer, tmp_path / "check-viewer")
        archive.stop()
        viewer.stop()

    results = [r for j in jobs for r in j["results"]]
    overlays = sum(r["kind"] == "SC" for r in results)
    assert overlays >= 1
    assert archive_kinds == {"SEG": 1, "SR": 2}
    assert viewer_kinds == {"SR": 2, "SC": overlays}
    # Each result shows where it went; the archive's copies were committed, not just stored.
    for result in results:
        where = {d["destination"]: d["state"] for d in result["deliveries"]}
        expected = {"SEG": {"pacs"}, "SR": {"pacs", "viewer"}, "SC": {"viewer"}}[result["kind"]]
        assert where == dict.fromkeys(expected, "delivered"), result
    assert outcomes[("SEG", "pacs")] == ["stored", "committed"]
    assert outcomes[("SR", "pacs")] == ["stored", "committed"] * 2  # one per model
    assert outcomes[("SC", "viewer")] == ["stored"] * overlays
    # The overlay is in the source study, and says it is an AI result in its pixels' band.
    study_uid = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    sc = [ds for ds in viewer_objects if ds.SOPClassUID == UID("1.2.840.10008.5.1.4.1.1.7")]
    assert {ds.StudyInstanceUID for ds in sc} == {study_uid}
    assert {ds.BurnedInAnnotation for ds in sc} == {"YES"}
    print(
        f"destinations: archive (C-STORE + commitment) {dict(archive_kinds)}, "
        f"viewer (STOW-RS) {dict(viewer_kinds)}"
    )


def test_dead_letter_then_operator_retry_resends(tmp_path: Path) -> None:
    files = phantom_study(tmp_path, 702, slices=12)
    archive_port = free_port()
    node = start_node(
        tmp_path / "node",
        archive=f"ORTHANC@127.0.0.1:{archive_port}",
        delivery_attempts="3",
        delivery_backoff_seconds="0.5",
        delivery_backoff_max_seconds="1",
    )
    dicom_port = node.dicom_port
    archive = None
    try:
        Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")
        failed = wait_for(
            lambda: jobs_settled(node, 2, "failed"), timeout=180, what="dead-lettered jobs"
        )
        for job in failed:
            assert "delivery dead-lettered" in job["error"] and "after 3 attempt(s)" in job["error"]
            for result in job["results"]:
                (row,) = result["deliveries"]
                assert (row["destination"], row["state"], row["attempts"]) == ("archive", "dead", 3)
                assert "not established" in row["last_error"]
        archive = start_orthanc(tmp_path / "archive", dicom_port=archive_port)
        for job in failed:
            response = node.post(f"/api/jobs/{job['id']}/retry")
            assert response.status_code == 202, response.text
            assert response.json()["state"] == "delivering"
        jobs = wait_for(
            lambda: jobs_settled(node, 2, "succeeded"), timeout=120, what="delivery on retry"
        )
        kinds, _ = held(archive)
    finally:
        node.stop()
        if archive is not None:
            archive.stop()
    assert all(j["attempts"] == 1 for j in jobs)  # sent again, not analysed again
    assert kinds == {"SEG": 1, "SR": 2}
    print(f"dead letter then retry: objects expected 3, found {sum(kinds.values())} {dict(kinds)}")


def test_new_instances_rerun_and_the_new_report_supersedes_the_old(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    files = sorted(phantom_study(tmp_path, 703, slices=14))
    node = start_node(tmp_path / "node", archive=orthanc.destination)
    dicom_port = node.dicom_port
    try:
        slices = sorted(
            files, key=lambda p: int(dcmread(p, stop_before_pixels=True).InstanceNumber)
        )
        Orthanc.store_to(slices[:12], "127.0.0.1", dicom_port, "AINODE")
        wait_for(lambda: jobs_settled(node, 2, "succeeded"), timeout=180, what="first run")
        Orthanc.store_to(slices[12:], "127.0.0.1", dicom_port, "AINODE")
        jobs = wait_for(lambda: jobs_settled(node, 4, "succeeded"), timeout=180, what="re-run")
    finally:
        node.stop()
    kinds, objects = held(orthanc, tmp_path / "check")
    assert kinds == {"SEG": 2, "SR": 4}
    first, second = sorted(jobs, key=lambda j: j["id"])[:2], sorted(jobs, key=lambda j: j["id"])[2:]
    reports = {str(ds.SOPInstanceUID): ds for ds in objects if "ContentSequence" in ds}
    for old_job, new_job in zip(
        sorted(first, key=lambda j: j["model_name"]),
        sorted(second, key=lambda j: j["model_name"]),
        strict=True,
    ):
        old_uid = next(r["sop_instance_uid"] for r in old_job["results"] if r["kind"] == "SR")
        new_uid = next(r["sop_instance_uid"] for r in new_job["results"] if r["kind"] == "SR")
        assert old_uid != new_uid
        new = reports[new_uid]
        (study,) = new.PredecessorDocumentsSequence
        (series,) = study.ReferencedSeriesSequence
        (instance,) = series.ReferencedSOPSequence
        assert instance.ReferencedSOPInstanceUID == old_uid
        assert series.SeriesInstanceUID == reports[old_uid].SeriesInstanceUID
        assert "PredecessorDocumentsSequence" not in reports[old_uid]
