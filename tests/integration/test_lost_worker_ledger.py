"""A job whose worker is lost again and again: the ledger counts the losses in a row and
fails the job at AINODE_MAX_JOB_ATTEMPTS, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from node.db.migrate import upgrade_to_head
from node.db.models import Job, JobState, Patient, Series, Study, utcnow
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.jobs.ledger import GIVEN_UP, INTERRUPTED, WORKER_LOST, JobLedger
from node.settings import Settings

LOST = timedelta(seconds=60)


@pytest.fixture
def sessions(database_url: str, tmp_path: Path) -> Iterator[SessionFactory]:
    engine = make_engine(Settings(data_dir=tmp_path, database_url=database_url))
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def job_id(sessions: SessionFactory) -> int:
    with transaction(sessions) as session:
        study = Study(study_instance_uid="1.2.3", patient=Patient(patient_id="P"))
        series = Series(series_instance_uid="1.2.3.4", study=study, modality="CT")
        job = Job(series=series, model_name="m", model_version="1")
        session.add(job)
        session.flush()
        return job.id


def silence(sessions: SessionFactory, job_id: int) -> None:
    """The worker running ``job_id`` stops renewing it (as a SIGKILL leaves it)."""
    with transaction(sessions) as session:
        session.get_one(Job, job_id).heartbeat_at = utcnow() - LOST * 2


def steps(sessions: SessionFactory, job_id: int) -> list[tuple[int, str, str]]:
    with sessions() as session:
        return [(s.attempt, s.name, s.state.value) for s in session.get_one(Job, job_id).steps]


def test_three_losses_in_a_row_fail_the_job_and_a_retry_starts_again(
    sessions: SessionFactory, job_id: int
) -> None:
    ledger = JobLedger(sessions, max_job_attempts=3)
    dead = []  # steps their worker never left (kept, so nothing closes them)
    for attempt in (1, 2):
        assert ledger.start(job_id, LOST) == attempt
        dead.append(ledger.step(job_id, attempt, "load"))
        dead[-1].__enter__()  # the worker dies in this step
        silence(sessions, job_id)
        assert ledger.requeue_lost(job_id, LOST)  # runs again
        assert ledger.state_of(job_id) is JobState.QUEUED
    assert ledger.start(job_id, LOST) == 3
    silence(sessions, job_id)

    assert not ledger.requeue_lost(job_id, LOST)

    with sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.state is JobState.FAILED and job.finished_at is not None
        assert job.error.startswith(
            "worker lost 3 times in a row (killed, out of memory?): not run again"
        )
        interrupted = [s.detail for s in job.steps if s.name == "load"]
    assert interrupted == [INTERRUPTED, INTERRUPTED]
    assert [(a, n) for a, n, _ in steps(sessions, job_id) if n != "load"] == [
        (1, WORKER_LOST), (2, WORKER_LOST), (3, WORKER_LOST), (3, GIVEN_UP),
    ]  # fmt: skip
    assert ledger.start(job_id, LOST) is None  # a stray message does not revive it

    # The operator retries: a new run, with the same allowance.
    ledger.reset_for_retry(job_id)
    assert ledger.start(job_id, LOST) == 4
    silence(sessions, job_id)
    assert ledger.requeue_lost(job_id, LOST)
    assert ledger.state_of(job_id) is JobState.QUEUED


def test_an_attempt_that_ends_breaks_the_run_of_losses(
    sessions: SessionFactory, job_id: int
) -> None:
    ledger = JobLedger(sessions, max_job_attempts=2)
    assert ledger.start(job_id, LOST) == 1
    silence(sessions, job_id)
    assert ledger.requeue_lost(job_id, LOST)
    assert ledger.start(job_id, LOST) == 2
    ledger.fail(job_id, "no pixel data")  # ended: not a lost worker
    ledger.reset_for_retry(job_id)
    assert ledger.start(job_id, LOST) == 3
    silence(sessions, job_id)

    assert ledger.requeue_lost(job_id, LOST)  # one loss in a row, not two


def test_a_redelivered_message_taking_over_a_lost_job_counts_too(
    sessions: SessionFactory, job_id: int
) -> None:
    ledger = JobLedger(sessions, max_job_attempts=2)
    assert ledger.start(job_id, LOST) == 1
    silence(sessions, job_id)
    assert ledger.start(job_id, LOST) == 2  # the broker's re-delivery takes it over
    silence(sessions, job_id)

    assert ledger.start(job_id, LOST) is None
    assert ledger.state_of(job_id) is JobState.FAILED
    assert [n for _, n, _ in steps(sessions, job_id)] == [WORKER_LOST, WORKER_LOST, GIVEN_UP]
