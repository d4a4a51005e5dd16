"""Faults that must lose nothing: each pushes studies through and counts the archive.

- A worker killed with SIGKILL in the middle of a job: the node's supervisor starts a
  new worker, the reconciler sees the job's heartbeat stop and runs it again.
- The archive down for a while, then back: delivery retries with backoff.
- The node itself stopped between encoding and delivery, then started again.
- Redis restarted with its data lost while jobs are queued and running: the
  reconciler re-sends from the database what the broker forgot.
- A job that outlives the broker's visibility timeout: Redis hands its message to a
  second worker, which sees the job alive in the database and leaves it.

Each ends with exactly the expected objects in the archive, none lost, none twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from tests.factories import phantom_study
from tests.node_process import NodeProcess, start_node, wait_for
from tests.orthanc import Orthanc, free_port, start_orthanc

pytestmark = pytest.mark.e2e


def worker_pids(node: NodeProcess, queues: str = "gpu") -> list[int]:
    """The node's worker children taking ``queues`` (by default: the analysis worker)."""
    assert node.process is not None
    children = psutil.Process(node.process.pid).children(recursive=True)
    return [c.pid for c in children if " worker --queues " + queues in " ".join(c.cmdline())]


def test_worker_killed_mid_job_loses_nothing(tmp_path: Path, orthanc: Orthanc) -> None:
    studies = [phantom_study(tmp_path, seed, slices=90) for seed in (101, 102)]
    node = start_node(
        tmp_path / "node",
        archive=orthanc.destination,
        heartbeat_seconds="1",
        lost_worker_seconds="5",
    )
    dicom_port = node.dicom_port
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


def jobs_in(node: NodeProcess, *states: str, count: int = 4) -> list | None:
    jobs = node.get("/api/jobs")
    done = len(jobs) == count and all(j["state"] in states for j in jobs)  # type: ignore[arg-type]
    return jobs if done else None  # type: ignore[return-value]


def test_archive_down_for_a_while_then_back(tmp_path: Path) -> None:
    studies = [phantom_study(tmp_path, seed, slices=12) for seed in (201, 202)]
    archive_port = free_port()
    node = start_node(
        tmp_path / "node",
        archive=f"ORTHANC@127.0.0.1:{archive_port}",
        delivery_backoff_seconds="1",
        delivery_backoff_max_seconds="4",
    )
    dicom_port = node.dicom_port
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
    studies = [phantom_study(tmp_path, seed, slices=12) for seed in (301, 302)]
    archive_port = free_port()
    node = start_node(
        tmp_path / "node", archive=f"ORTHANC@127.0.0.1:{archive_port}", reconcile_seconds="3"
    )
    dicom_port = node.dicom_port
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


class RedisServer:
    """A private redis-server without persistence: a restart loses every message."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), timeout=20, interval=0.1, what="redis-server")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


def queued_and_running(node: NodeProcess) -> bool:
    jobs = node.get("/api/jobs")
    states = [j["state"] for j in jobs]  # type: ignore[union-attr]
    inferring = any(
        j["state"] == "running" and any(s["name"] == "infer" for s in j["steps"])
        for j in jobs  # type: ignore[union-attr]
    )
    return inferring and "queued" in states


def test_redis_restarted_with_its_data_lost(
    tmp_path: Path, orthanc: Orthanc, redis_server: RedisServer
) -> None:
    studies = [phantom_study(tmp_path, seed, slices=60) for seed in (401, 402, 403)]
    node = start_node(
        tmp_path / "node",
        archive=orthanc.destination,
        broker_url=redis_server.url,
        reconcile_seconds="3",
        heartbeat_seconds="1",
        lost_worker_seconds="20",
    )
    dicom_port = node.dicom_port
    try:
        for files in studies:
            Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")
        wait_for(
            lambda: queued_and_running(node), timeout=120, interval=0.2,
            what="a job running and others queued",
        )  # fmt: skip
        redis_server.kill()
        redis_server.start()  # same port, nothing in it
        restarted_at = time.monotonic()
        try:
            jobs = wait_for(
                lambda: jobs_in(node, "succeeded", count=6), timeout=300,
                what="every job delivered after the broker lost its data",
            )  # fmt: skip
        except AssertionError:
            print(node.log())
            raise
        recovered = time.monotonic() - restarted_at
    finally:
        node.stop()
    # The queued jobs' messages were gone: the reconciler sent them again.
    assert "re-sent jobs the broker may have lost" in node.log(500_000)
    found = archive_counts(orthanc)
    expected = {"SEG": 3, "SR": 6}
    print(
        f"redis restarted empty: studies sent 3, objects expected {sum(expected.values())}, "
        f"found {sum(found.values())} {found}, recovered in {recovered:.1f} s"
    )
    assert found == expected
    assert all(j["attempts"] >= 1 for j in jobs)


def test_job_outliving_the_visibility_timeout_runs_once(
    tmp_path: Path, orthanc: Orthanc, redis_server: RedisServer
) -> None:
    files = phantom_study(tmp_path, 601, slices=200)
    node = start_node(
        tmp_path / "node",
        archive=orthanc.destination,
        broker_url=redis_server.url,
        visibility_timeout_seconds="2",
        heartbeat_seconds="1",
        lost_worker_seconds="60",
    )
    dicom_port = node.dicom_port
    # A second worker, as a second GPU machine would run: idle while the first runs
    # the long segmentation, so it is the one Redis re-delivers the message to.
    second_log = tmp_path / "second-worker.log"
    with second_log.open("wb") as log:
        second = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "worker"],
            env=node.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")
        started = time.monotonic()
        try:
            jobs = wait_for(
                lambda: jobs_in(node, "succeeded", count=2), timeout=300,
                what="both jobs delivered",
            )  # fmt: skip
        except AssertionError:
            print(node.log(), second_log.read_text(errors="replace")[-4000:])
            raise
        took = time.monotonic() - started
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=60)
        node.stop()
    logs = node.log(200_000) + second_log.read_text(errors="replace")
    redelivered = logs.count("has nothing to do (finished, gone, or running elsewhere)")
    seg_job = next(j for j in jobs if j["model_name"] == "ct-lung-nodule-seg")
    found = archive_counts(orthanc)
    expected = {"SEG": 1, "SR": 2}
    print(
        f"visibility timeout 2 s: studies sent 1, the segmentation ran "
        f"{max(s['seconds'] or 0 for s in seg_job['steps'] if s['name'] == 'infer'):.1f} s "
        f"(job {took:.1f} s), messages re-delivered and declined {redelivered}, "
        f"objects expected {sum(expected.values())}, found {sum(found.values())} {found}"
    )
    assert redelivered >= 1, "the broker never re-delivered the long job's message"
    assert seg_job["attempts"] == 1  # re-delivered, never run twice
    assert found == expected
