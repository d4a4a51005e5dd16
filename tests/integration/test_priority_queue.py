"""STAT work overtakes a backlog: a real Celery worker (``tests.priority_worker``: the
node's Celery app and the analysis worker's arguments) on the machine's Redis, the jobs'
messages sent by the node's ``JobQueue`` at the priorities their rows hold."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from node.db.migrate import upgrade_to_head
from node.db.models import Job, Patient, Series, Study
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.db.worklist import UpsPriority
from node.jobs.celery_app import make_celery
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.settings import Settings
from tests.node_process import wait_for
from tests.priority_worker import RELEASE, TAKEN

STAT, HIGH, MEDIUM, LOW = UpsPriority
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[SessionFactory]:
    engine = make_engine(Settings(data_dir=tmp_path))
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


def make_jobs(sessions: SessionFactory, priorities: list[UpsPriority]) -> list[int]:
    """A QUEUED job per priority, in that order, as routing leaves them; their ids."""
    with transaction(sessions) as session:
        study = Study(study_instance_uid="1.2.3", patient=Patient(patient_id="P"))
        series = Series(series_instance_uid="1.2.3.4", study=study, modality="CT")
        jobs = [
            Job(series=series, model_name=f"m{n}", model_version="1", priority=priority)
            for n, priority in enumerate(priorities)
        ]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


@pytest.fixture
def worker_for(machine_redis_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_stat_job_sent_after_a_backlog_runs_right_after_the_current_one(
    sessions: SessionFactory,
    machine_redis_url: str,
    worker_for: list[subprocess.Popen[bytes]],
) -> None:
    busy, *backlog, stat = make_jobs(
        sessions, [MEDIUM, LOW, *[MEDIUM] * 5, HIGH, *[MEDIUM] * 5, STAT]
    )
    notes = redis.Redis.from_url(machine_redis_url)
    worker_for.append(
        subprocess.Popen(
            [sys.executable, "-m", "tests.priority_worker", machine_redis_url, "--hold", str(busy)],
            cwd=ROOT,
        )
    )
    queue = JobQueue(make_celery(machine_redis_url, 3600), JobLedger(sessions))
    queue.send_analysis(busy)
    wait_for(lambda: notes.lrange(TAKEN, 0, -1), 60, 0.1, what="the worker to take a job")
    for job_id in [*backlog, stat]:  # read from each row: the node's own sends
        queue.send_analysis(job_id)
    notes.rpush(RELEASE, 1)  # the job it is running finishes
    taken = wait_for(
        lambda: (ids := notes.lrange(TAKEN, 0, -1)) and len(ids) == 2 + len(backlog) and ids,
        60,
        0.1,
        what="every job taken",
    )
    order = [int(job_id) for job_id in taken]
    with sessions() as session:
        priority = {job.id: job.priority for job in session.query(Job)}
    # The one it held first, then the STAT job sent last, then the HIGH one, the MEDIUM
    # ones in the order sent, and the LOW one last.
    assert order[:3] == [busy, stat, backlog[6]]
    assert [priority[job_id] for job_id in order[1:]] == [STAT, HIGH, *[MEDIUM] * 10, LOW]
    mediums = [job_id for job_id in backlog if priority[job_id] is MEDIUM]
    assert order[3:-1] == mediums
