"""A wrong early call costs a second analysis, nothing more: the node as a process, a
real Orthanc as the archive, and DCMTK's storescu sending one series in two parts.

The first part (Instance Numbers 1..12 of 14, evenly spaced) is released: the node
counts the series complete at once (evidence; the quiet period is 300 s, far beyond
the test's waits), analyses it and delivers. The last two slices come on a second
association: the series goes back to receiving, is complete again at that release,
every model runs again, and each new SR names the first as its predecessor (Predecessor
Documents Sequence), so the archive and a reader know it replaces it."""

from __future__ import annotations

import time
from collections import Counter
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from sqlalchemy import create_engine, text

from tests.factories import phantom_study
from tests.node_process import NodeProcess, start_node, wait_for
from tests.orthanc import Orthanc

pytestmark = pytest.mark.e2e

SR = "1.2.840.10008.5.1.4.1.1.88.34"


def settled(node: NodeProcess, count: int) -> list | None:
    jobs = node.get("/api/jobs")
    done = len(jobs) == count and all(j["state"] == "succeeded" for j in jobs)  # type: ignore[arg-type]
    return jobs if done else None  # type: ignore[return-value]


def completion(node: NodeProcess) -> tuple[str, str] | None:
    """(state, why complete) of the node's one series, from its database."""
    engine = create_engine(f"sqlite:///{node.data_dir / 'ainode.db'}")
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT state, completed_by FROM series")).first()
    finally:
        engine.dispose()
    return None if row is None else (str(row[0]), str(row[1]))


def complete_again(node: NodeProcess, because: str) -> tuple[str, str] | None:
    state = completion(node)
    return state if state is not None and because in state[1] else None


def reports(archive: Orthanc) -> dict[str, Dataset]:
    found = {}
    for instance_id in archive.get("/instances"):  # type: ignore[union-attr]
        ds = dcmread(BytesIO(archive.file(instance_id)))
        if ds.SOPClassUID == SR:
            found[str(ds.SOPInstanceUID)] = ds
    return found


def test_late_instances_after_an_early_call_rerun_and_supersede(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    files = phantom_study(tmp_path, 704, slices=14)
    slices = sorted(files, key=lambda p: int(dcmread(p, stop_before_pixels=True).InstanceNumber))
    node = start_node(tmp_path / "node", archive=orthanc.destination, stable_seconds="300")
    try:
        began = time.monotonic()
        Orthanc.store_to(slices[:12], "127.0.0.1", node.dicom_port, "AINODE")
        first_call = wait_for(lambda: complete_again(node, "1..12"), timeout=60,
                              interval=0.1, what="the early call")  # fmt: skip
        print(f"first part: complete {time.monotonic() - began:.2f} s after sending began: "
              f"{first_call[1]}")  # fmt: skip
        first = wait_for(lambda: settled(node, 2), timeout=300, what="the first analysis")
        began = time.monotonic()
        Orthanc.store_to(slices[12:], "127.0.0.1", node.dicom_port, "AINODE")
        second_call = wait_for(lambda: complete_again(node, "1..14"), timeout=60,
                               interval=0.1, what="the series complete again")  # fmt: skip
        print(f"late part: complete {time.monotonic() - began:.2f} s after sending began: "
              f"{second_call[1]}")  # fmt: skip
        jobs = wait_for(lambda: settled(node, 4), timeout=300, what="the second analysis")
    finally:
        node.stop()
    assert first_call[1].startswith("evidence: MODALITY released the association")
    assert second_call[0] == "ROUTED"  # the member name, as the column stores it
    held = reports(orthanc)
    assert len(held) == 4  # two models, twice each
    first_ids = {j["id"] for j in first}
    by_model: dict[str, list[dict]] = {}
    for job in sorted(jobs, key=lambda j: j["id"]):
        by_model.setdefault(job["model_name"], []).append(job)
    assert Counter(len(runs) for runs in by_model.values()) == {2: 2}
    for old_job, new_job in by_model.values():
        assert old_job["id"] in first_ids and new_job["id"] not in first_ids
        old_uid = next(r["sop_instance_uid"] for r in old_job["results"] if r["kind"] == "SR")
        new_uid = next(r["sop_instance_uid"] for r in new_job["results"] if r["kind"] == "SR")
        assert old_uid != new_uid
        (study,) = held[new_uid].PredecessorDocumentsSequence
        (series,) = study.ReferencedSeriesSequence
        (instance,) = series.ReferencedSOPSequence
        assert instance.ReferencedSOPInstanceUID == old_uid
        assert "PredecessorDocumentsSequence" not in held[old_uid]
