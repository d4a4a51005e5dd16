"""A job that kills its worker every time it runs does not run for ever.

A real node (``ainode serve``, its Celery worker child, embedded Redis) gets a CT
study; the worker running the segmentation job is killed with SIGKILL mid-job, as the
kernel's OOM killer would, three times. The node's supervisor starts a new worker
each time and the reconciler runs the job again after the first two losses; after
the third (AINODE_MAX_JOB_ATTEMPTS) the job is FAILED with the reason, and the jobs
after it, of the same study and of a study sent afterwards, still run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.test_faults import worker_pids
from tests.factories import phantom_study
from tests.node_process import NodeProcess, start_node, wait_for
from tests.orthanc import Orthanc

pytestmark = pytest.mark.e2e

SEGMENTATION = "ct-lung-nodule-seg"


def jobs(node: NodeProcess) -> list[dict]:
    return node.get("/api/jobs")  # type: ignore[return-value]


def running_attempt(node: NodeProcess, job_id: int, attempt: int) -> bool:
    """Job ``job_id`` is in attempt ``attempt`` with one of its steps running."""
    for job in jobs(node):
        if job["id"] == job_id and job["state"] == "running" and job["attempts"] == attempt:
            return any(step["state"] == "running" for step in job["steps"])
    return False


def test_a_job_whose_worker_is_killed_three_times_fails_and_others_run(tmp_path: Path) -> None:
    first, later = (phantom_study(tmp_path, seed, slices=60) for seed in (701, 702))
    node = start_node(
        tmp_path / "node",
        heartbeat_seconds="1",
        lost_worker_seconds="3",
        max_job_attempts="3",
    )
    try:
        Orthanc.store_to(first, "127.0.0.1", node.dicom_port, "AINODE")
        victim = wait_for(
            lambda: next((j for j in jobs(node) if j["model_name"] == SEGMENTATION), None),
            timeout=120,
            what="the segmentation job",
        )
        killed = []
        for attempt in (1, 2, 3):
            wait_for(
                lambda attempt=attempt: running_attempt(node, victim["id"], attempt), timeout=180,
                interval=0.1, what=f"attempt {attempt} of the segmentation job running",
            )  # fmt: skip
            (pid,) = worker_pids(node)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        def settled() -> list[dict] | None:
            listed = jobs(node)
            done = len(listed) == 2 and all(j["state"] in ("failed", "succeeded") for j in listed)
            return listed if done else None

        try:
            settled_jobs = wait_for(settled, timeout=180, what="both jobs of the first study")
        except AssertionError:
            print(node.log())
            raise
        failed = next(j for j in settled_jobs if j["id"] == victim["id"])
        other = next(j for j in settled_jobs if j["id"] != victim["id"])

        # The next study's jobs run on a new worker: nothing is blocked.
        Orthanc.store_to(later, "127.0.0.1", node.dicom_port, "AINODE")

        def later_done() -> list[dict] | None:
            listed = [j for j in jobs(node) if j["id"] not in (failed["id"], other["id"])]
            done = len(listed) == 2 and all(j["state"] == "succeeded" for j in listed)
            return listed if done else None

        try:
            wait_for(later_done, timeout=300, what="the later study's jobs to succeed")
        except AssertionError:
            print(node.log())
            raise
        assert worker_pids(node) and worker_pids(node)[0] not in killed
    finally:
        node.stop()

    print(f"job {failed['id']}: {failed['error']}")
    assert failed["state"] == "failed" and failed["attempts"] == 3
    assert failed["error"].startswith(
        "worker lost 3 times in a row (killed, out of memory?): not run again"
    )
    assert [s["name"] for s in failed["steps"]][-2:] == ["worker_lost", "given_up"]
    assert other["state"] == "succeeded"
    log = node.log(500_000)
    for times in ("1 time", "2 times"):
        assert f"worker lost {times} in a row (killed, out of memory?); running it again" in log
