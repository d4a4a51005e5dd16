"""Faults that must lose nothing: each pushes studies through and counts the archive.

A worker killed with SIGKILL in the middle of a job: the node's supervisor starts a
new worker, the reconciler sees the job's heartbeat stop and runs it again, and the
archive ends up with exactly the expected objects, none lost, none twice.
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
from tests.orthanc import Orthanc

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
