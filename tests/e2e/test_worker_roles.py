"""Analysis and delivery on workers of their own, and one job analysed once however often
its message comes.

- ``ainode serve`` runs an analysis worker (queue ``gpu``) and a delivery worker (queue
  ``io``, several deliveries at once). An archive whose host does not answer (a black
  hole: its connections are neither accepted nor refused, so each try waits for the
  system's connect timeout, about two minutes) holds up neither the analysis of the
  next study nor its delivery to an archive that works: both happen while the first
  try is still waiting.
- The same analysis message delivered twice, to two real worker processes at once:
  one of them analyses the job, the other leaves it (``JobLedger.start``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pydicom import dcmread

from node.db.migrate import upgrade_to_head
from node.db.models import Job, JobState
from node.db.session import make_engine, make_session_factory
from node.jobs.celery_app import make_celery
from node.jobs.contracts import ANALYZE_TASK, GPU_QUEUE, IO_QUEUE
from node.settings import Settings
from node.supervisor import write_private_settings
from tests.factories import phantom_study
from tests.integration.test_serve_process import worker_child
from tests.node_process import NodeProcess, start_node, wait_for
from tests.orthanc import Orthanc
from tests.worker_jobs import queue_series_jobs

pytestmark = pytest.mark.e2e

SEGMENTATION = "ct-lung-nodule-seg"
CLASSIFIER = "ct-nodule-classifier"


class BlackHole:
    """A local TCP port whose accept queue is full: the kernel drops further connection
    requests, so a connect to it neither succeeds nor fails until the connect timeout,
    as with an archive host that is down behind a firewall."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)  # room for one connection, never accepted
        self.port = self.listener.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def close(self) -> None:
        self.filler.close()
        self.listener.close()


def waiting_connects(pid: int, port: int) -> set[int]:
    """The local ports of ``pid``'s connections to ``port`` still waiting to be accepted."""
    return {
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_SYN_SENT
    }


def study_uid(files: list[Path]) -> str:
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def jobs_of(node: NodeProcess, study: str) -> dict[str, dict]:
    jobs = node.get("/api/jobs")
    return {j["model_name"]: j for j in jobs if j["study_instance_uid"] == study}  # type: ignore[union-attr]


def test_an_archive_that_does_not_answer_holds_up_no_analysis_and_no_other_delivery(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    hole = BlackHole()
    destinations = [
        {"name": "stuck", "dicom": f"STUCK@127.0.0.1:{hole.port}", "models": [SEGMENTATION]},
        {"name": "pacs", "dicom": orthanc.destination, "models": [CLASSIFIER]},
    ]
    first, second = (phantom_study(tmp_path, seed, slices=12) for seed in (1001, 1002))
    node = start_node(
        tmp_path / "node", destinations=json.dumps(destinations), delivery_backoff_seconds="600"
    )
    try:
        assert node.process is not None
        serve = node.process.pid
        delivery = wait_for(lambda: worker_child(serve, IO_QUEUE), 60, what="the delivery worker")
        analysis = wait_for(lambda: worker_child(serve, GPU_QUEUE), 60, what="the analysis worker")
        assert delivery != analysis

        Orthanc.store_to(first, "127.0.0.1", node.dicom_port, "AINODE")
        tries = wait_for(
            lambda: waiting_connects(delivery, hole.port), 180, interval=0.2,
            what="the first study's SEG delivery waiting on the silent archive",
        )  # fmt: skip

        Orthanc.store_to(second, "127.0.0.1", node.dicom_port, "AINODE")

        def second_study_done() -> bool:
            jobs = jobs_of(node, study_uid(second))
            return (
                jobs.get(CLASSIFIER, {}).get("state") == "succeeded"
                and jobs.get(SEGMENTATION, {}).get("state") == "delivering"
                and jobs_of(node, study_uid(first))[CLASSIFIER]["state"] == "succeeded"
            )

        try:
            wait_for(second_study_done, 180, what="the second study analysed and delivered")
        except AssertionError:
            print(node.log())
            raise
        # Meanwhile the first SEG's try is the same one, still waiting: not given up,
        # not failed, not tried again.
        still = waiting_connects(delivery, hole.port)
        first_seg = jobs_of(node, study_uid(first))[SEGMENTATION]
        held = orthanc.instances_by_modality()
    finally:
        node.stop()
        hole.close()
    assert tries <= still, f"the first try ended: waiting {still}, first seen {tries}"
    assert first_seg["state"] == "delivering"
    deliveries = [d for r in first_seg["results"] for d in r["deliveries"]]  # its SEG and SR
    assert {(d["destination"], d["attempts"], d["last_error"]) for d in deliveries} == {
        ("stuck", 1, "")
    }
    assert len(deliveries) == 2 and all(d["stored_at"] is None for d in deliveries)
    assert len(held.get("SR", [])) == 2  # both studies' classifier reports reached the PACS
    assert "SEG" not in held


def test_one_message_delivered_twice_to_two_workers_is_analysed_once(
    tmp_path: Path, machine_redis_url: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "node", broker_url=machine_redis_url, device="cpu", log_level="INFO"
    )
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    config = write_private_settings(settings, settings.data_dir / "worker.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINODE_")}
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    workers = []
    for log in logs:
        with log.open("wb") as out:
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "node.cli",
                        "--config",
                        str(config),
                        "worker",
                        "--queues",
                        GPU_QUEUE,
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )

    def text(log: Path) -> str:
        return log.read_text(errors="replace")

    try:
        wait_for(
            lambda: all(" ready." in text(log) for log in logs), 240,
            what="both workers warm and consuming",
        )  # fmt: skip
        (job_id,) = queue_series_jobs(
            sessions, settings, phantom_study(tmp_path, 1101, slices=12), [CLASSIFIER]
        )
        app = make_celery(machine_redis_url, settings.visibility_timeout_seconds)
        for _ in range(2):  # the same message (one task id), twice
            app.send_task(ANALYZE_TASK, args=[job_id], queue=GPU_QUEUE, task_id=f"job-{job_id}")

        def both_taken() -> bool:
            declined = sum(text(log).count("has nothing to do") for log in logs)
            with sessions() as session:
                state = session.get_one(Job, job_id).state
            return declined >= 1 and state is JobState.DELIVERING

        try:
            wait_for(both_taken, 240, what="the job analysed and the second message declined")
        except AssertionError:
            print(*(text(log)[-4000:] for log in logs), sep="\n----\n")
            raise
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
    received = [text(log).count(f"ainode.analyze_series[job-{job_id}] received") for log in logs]
    with sessions() as session:
        job = session.get_one(Job, job_id)
        steps = [(s.attempt, s.name) for s in job.steps]
        attempts = job.attempts
    engine.dispose()
    assert received == [1, 1]  # each worker got the message once
    assert attempts == 1
    assert [name for attempt, name in steps if attempt == 1].count("infer") == 1
    assert {attempt for attempt, _ in steps} == {1}
    assert sum(text(log).count("has nothing to do") for log in logs) == 1
    assert sum(text(log).count(f"model {CLASSIFIER} 1.0.0 loaded and warmed") for log in logs) == 2
