"""Faults that must lose nothing: each pushes studies through and counts the archive.

- A worker killed with SIGKILL in the middle of a job: the node's supervisor starts a
  new worker, the reconciler sees the job's heartbeat stop and runs it again.
- The archive down for a while, then back: delivery retries with backoff.
- The node itself stopped between encoding and delivery, then started again.

Each ends with exactly the expected objects in the archive, none lost, none twice.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from models.phantom import make_phantom
from tests.factories import make_ct_series, write_series
from tests.node_process import NodeProcess, node_environment, wait_for
from tests.orthanc import Orthanc, free_port, start_orthanc

pytestmark = pytest.mark.e2e


def study(tmp_path: Path, seed: int, slices: int) -> list[Path]:
    phantom = make_phantom(
        np.random.default_rng(seed), shape=(slices, 512, 512), spacing=(2.0, 0.7, 0.7), lesions=1
    )
    datasets = make_ct_series(phantom.hu, phantom.spacing, patient_id=f"FAULT{seed}")
    return write_series(datasets, tmp_path / f"study-{seed}")


def worker_pids(node: NodeProcess) -> list[int]:
    assert node.process is not None
    children = psutil.Process(node.process.pid).children(recursive=True)
    return [c.pid for c in children if "worker" in " ".join(c.cmdline())]


def test_worker_killed_mid_job_loses_nothing(tmp_path: Path, orthanc: Orthanc) -> None:
    studies = [study(tmp_path, seed, slices=90) for seed in (101, 102)]
    env, dicom_port, http_port = node_environment(
        tmp_path / "node",
        archive=orthanc.destination,
        heartbeat_seconds="1",
        lost_worker_seconds="5",
    )
    node = NodeProcess(tmp_path / "node", dicom_port, http_port, env)
    node.start()
    try:
        for files in studies:
            Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")

        def running_inference() -> dict | None:
            for job in node.get("/api/jobs"):  # type: ignore[union-attr]
                steps = {s["name"]: s["state"] for s in job["steps"]}
                if job["state"] == "running" and steps.get("infer") == "running":
                    return job
            return None

        victim = wait_for(running_inference, timeout=120, interval=0.2, what="a job mid-inference")
        (pid,) = worker_pids(node)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        def all_delivered() -> list | None:
            jobs = node.get("/api/jobs")
            done = len(jobs) == 4 and all(j["state"] == "succeeded" for j in jobs)  # type: ignore[arg-type]
            return jobs if done else None  # type: ignore[return-value]

        try:
            jobs = wait_for(all_delivered, timeout=240, what="every job delivered after the kill")
        except AssertionError:
            print(node.log())
            raise
        recovered = time.monotonic() - killed_at
        assert worker_pids(node) and worker_pids(node) != [pid]  # a new worker took over
    finally:
        node.stop()

    rerun = next(j for j in jobs if j["id"] == victim["id"])
    assert rerun["attempts"] == 2, rerun
    held = orthanc.instances_by_modality()
    found = {m: len(held.get(m, [])) for m in ("SEG", "SR")}
    expected = {"SEG": 2, "SR": 4}  # per study: one SEG, one SR per model
    print(
        f"worker SIGKILL: studies sent 2, objects expected {sum(expected.values())}, "
        f"found {sum(found.values())} {found}, recovered in {recovered:.1f} s"
    )
    assert found == expected


EXPECTED = {"SEG": 2, "SR": 4}  # two studies: one SEG, one SR per model each


def archive_counts(archive: Orthanc) -> dict[str, int]:
    held = archive.instances_by_modality()
    return {m: len(held.get(m, [])) for m in ("SEG", "SR")}


def jobs_in(node: NodeProcess, *states: str) -> list | None:
    jobs = node.get("/api/jobs")
    done = len(jobs) == 4 and all(j["state"] in states for j in jobs)  # type: ignore[arg-type]
    return jobs if done else None  # type: ignore[return-value]


def test_archive_down_for_a_while_then_back(tmp_path: Path) -> None:
    studies = [study(tmp_path, seed, slices=12) for seed in (201, 202)]
    archive_port = free_port()
    env, dicom_port, http_port = node_environment(
        tmp_path / "node", archive=f"ORTHANC@127.0.0.1:{archive_port}"
    )
    node = NodeProcess(tmp_path / "node", dicom_port, http_port, env)
    node.start()
    archive = None
    try:
        for files in studies:
            Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")

        def delivery_failing() -> bool:
            jobs = node.get("/api/jobs")
            results = [r for j in jobs for r in j["results"]]  # type: ignore[union-attr]
            return len(results) == 6 and all(r["delivery_error"] for r in results)

        wait_for(delivery_failing, timeout=120, what="every delivery to fail while it is down")
        archive = start_orthanc(tmp_path / "orthanc", dicom_port=archive_port)
        back_at = time.monotonic()
        wait_for(lambda: jobs_in(node, "succeeded"), timeout=180, what="delivery once it is back")
        recovered = time.monotonic() - back_at
        found = archive_counts(archive)
    finally:
        node.stop()
        if archive is not None:
            archive.stop()
    print(
        f"archive down: studies sent 2, objects expected 6, found {sum(found.values())} "
        f"{found}, delivered {recovered:.1f} s after it came back"
    )
    assert found == EXPECTED


def test_node_restarted_between_encoding_and_delivery(tmp_path: Path) -> None:
    studies = [study(tmp_path, seed, slices=12) for seed in (301, 302)]
    archive_port = free_port()
    env, dicom_port, http_port = node_environment(
        tmp_path / "node", archive=f"ORTHANC@127.0.0.1:{archive_port}", reconcile_seconds="3"
    )
    node = NodeProcess(tmp_path / "node", dicom_port, http_port, env)
    node.start()
    archive = None
    try:
        for files in studies:
            Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")
        # Encoded and kept, not yet delivered (the archive is not there yet).
        wait_for(lambda: jobs_in(node, "delivering"), timeout=120, what="every job encoded")
        node.stop()
        archive = start_orthanc(tmp_path / "orthanc", dicom_port=archive_port)
        restarted_at = time.monotonic()
        node.start()
        wait_for(lambda: jobs_in(node, "succeeded"), timeout=180, what="delivery after restart")
        recovered = time.monotonic() - restarted_at
        found = archive_counts(archive)
    finally:
        node.stop()
        if archive is not None:
            archive.stop()
    print(
        f"node restart: studies sent 2, objects expected 6, found {sum(found.values())} "
        f"{found}, delivered {recovered:.1f} s after the restart"
    )
    assert found == EXPECTED
