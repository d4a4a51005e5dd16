"""Workers racing for one job: exactly one starts it, every time, on SQLite and
PostgreSQL alike.

``JobLedger.start`` is a conditional UPDATE (the job still QUEUED, or RUNNING with a
heartbeat older than the lost-worker limit); the database's row (PostgreSQL) or write
(SQLite) lock decides which caller's UPDATE matched. Each race lines its contenders up
on a barrier and lets them all call ``start`` at once: many threads of one process,
then two processes.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from node.db.migrate import upgrade_to_head
from node.db.models import Job, JobState, JobStep, Patient, Series, Study, utcnow
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.jobs.ledger import WORKER_LOST, JobLedger
from node.settings import Settings

LOST = timedelta(seconds=60)
RACES = 50
THREADS = 8


def _sessions(database_url: str, data_dir: Path) -> tuple[Any, SessionFactory]:
    engine = make_engine(Settings(data_dir=data_dir, database_url=database_url))
    return engine, make_session_factory(engine)


@pytest.fixture
def sessions(database_url: str, tmp_path: Path) -> Iterator[SessionFactory]:
    engine, factory = _sessions(database_url, tmp_path)
    upgrade_to_head(engine)
    yield factory
    engine.dispose()


def new_jobs(sessions: SessionFactory, count: int) -> list[int]:
    with transaction(sessions) as session:
        study = Study(study_instance_uid="1.2.3", patient=Patient(patient_id="P"))
        series = Series(series_instance_uid="1.2.3.4", study=study, modality="CT")
        jobs = [Job(series=series, model_name="m", model_version="1") for _ in range(count)]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def race(ledger: JobLedger, job_id: int, contenders: int) -> list[int | None]:
    """What ``start`` answered each of ``contenders`` threads calling it at once."""
    barrier = threading.Barrier(contenders)

    def contender() -> int | None:
        barrier.wait(timeout=60)
        return ledger.start(job_id, LOST)

    with ThreadPoolExecutor(contenders) as pool:
        return [future.result() for future in [pool.submit(contender) for _ in range(contenders)]]


def winners(outcomes: list[int | None]) -> list[int]:
    return [attempt for attempt in outcomes if attempt is not None]


def test_threads_racing_for_a_queued_job_exactly_one_starts_it(sessions: SessionFactory) -> None:
    ledger = JobLedger(sessions)
    job_ids = new_jobs(sessions, RACES)
    for job_id in job_ids:
        assert winners(race(ledger, job_id, THREADS)) == [1], f"job {job_id}"
    with sessions() as session:
        jobs = session.scalars(select(Job).where(Job.id.in_(job_ids))).all()
        assert {(job.state, job.attempts) for job in jobs} == {(JobState.RUNNING, 1)}
        assert all(job.heartbeat_at is not None and job.started_at is not None for job in jobs)


def test_threads_racing_for_a_lost_job_exactly_one_takes_it_over(sessions: SessionFactory) -> None:
    ledger = JobLedger(sessions, max_job_attempts=3)
    job_ids = new_jobs(sessions, RACES // 2)
    for job_id in job_ids:
        assert ledger.start(job_id, LOST) == 1
    with transaction(sessions) as session:  # every worker stops renewing (SIGKILL)
        for job_id in job_ids:
            session.get_one(Job, job_id).heartbeat_at = utcnow() - LOST * 2
    for job_id in job_ids:
        assert winners(race(ledger, job_id, THREADS)) == [2], f"job {job_id}"
    with sessions() as session:
        lost = session.scalars(select(JobStep.job_pk).where(JobStep.name == WORKER_LOST)).all()
    assert sorted(lost) == sorted(job_ids)  # each loss recorded once, by the winner


def _contend(
    database_url: str, data_dir: str, job_ids: list[int], barrier: Any, results: Any
) -> None:
    """One worker process: for each job, wait for the other, then try to start it."""
    engine, factory = _sessions(database_url, Path(data_dir))
    ledger = JobLedger(factory)
    try:
        for job_id in job_ids:
            barrier.wait(timeout=60)
            results.put((job_id, ledger.start(job_id, LOST)))
    finally:
        engine.dispose()


def test_two_processes_racing_for_each_job_exactly_one_starts_it(
    sessions: SessionFactory, database_url: str, tmp_path: Path
) -> None:
    job_ids = new_jobs(sessions, RACES)
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters, no shared connection
    barrier = spawn.Barrier(2)
    results = spawn.Queue()
    processes = [
        spawn.Process(
            target=_contend, args=(database_url, str(tmp_path), job_ids, barrier, results)
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    outcomes: dict[int, list[int | None]] = {job_id: [] for job_id in job_ids}
    for _ in range(2 * len(job_ids)):
        job_id, attempt = results.get(timeout=120)
        outcomes[job_id].append(attempt)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert {job_id: winners(answers) for job_id, answers in outcomes.items()} == {
        job_id: [1] for job_id in job_ids
    }
