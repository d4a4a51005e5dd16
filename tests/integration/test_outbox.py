"""The delivery outbox on real databases (SQLite and PostgreSQL): planning per
destination, backoff, dead-letter, storage commitment reports, and the operator's retry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from node.db.migrate import upgrade_to_head
from node.db.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Job,
    JobState,
    Patient,
    ResultKind,
    Series,
    Study,
    utcnow,
)
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.delivery.destinations import DicomDestination, StowDestination
from node.delivery.outbox import (
    Delivered,
    Outbox,
    StillDelivering,
    Undeliverable,
    backoff_seconds,
)
from node.jobs.ledger import JobLedger, NewResult, Settled
from node.settings import Settings

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"

DESTINATIONS = [
    DicomDestination(name="pacs", dicom="PACS@127.0.0.1:104", storage_commitment=True),
    StowDestination(name="viewer", stow_url="http://127.0.0.1:1/dicom-web", kinds=["SR", "SC"]),
    DicomDestination(name="lung-only", dicom="LUNG@127.0.0.1:105", models=["other-model"]),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))
    return Settings(
        data_dir=tmp_path,
        database_url=url,
        destinations=DESTINATIONS,
        delivery_attempts=3,
        delivery_backoff_seconds=0.2,
        delivery_backoff_max_seconds=0.4,
        commitment_timeout_seconds=0.5,
    )


@pytest.fixture
def sessions(settings: Settings) -> Iterator[SessionFactory]:
    engine = make_engine(settings)
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


def analyzed_job(sessions: SessionFactory, settings: Settings) -> int:
    """A job of 'seg-model' whose SEG, SR and SC are encoded and planned."""
    with transaction(sessions) as session:
        patient = Patient(patient_id="P")
        study = Study(study_instance_uid="1.2.3", patient=patient)
        series = Series(series_instance_uid="1.2.3.4", study=study, modality="CT")
        job = Job(series=series, model_name="seg-model", model_version="1.0.0")
        session.add(job)
        session.flush()
        job_id = job.id
    JobLedger(sessions).analyzed(
        job_id,
        {"model": "seg-model"},
        [
            NewResult(ResultKind.SEG, SEG_CLASS, "2.25.1", f"{job_id}/seg.dcm"),
            NewResult(ResultKind.SR, SR_CLASS, "2.25.2", f"{job_id}/sr.dcm"),
            NewResult(ResultKind.SC, SC_CLASS, "2.25.3", f"{job_id}/sc.dcm"),
        ],
        settings.all_destinations,
    )
    return job_id


def settle(sessions: SessionFactory, outbox: Outbox, job_id: int) -> Settled:
    """The ledger applying the outbox's verdict, as the delivery pass does."""
    return JobLedger(sessions).settle(job_id, outbox.settlement)


def retry_deliveries(sessions: SessionFactory, outbox: Outbox, job_id: int) -> int:
    """The operator's retry of a failed delivery: the rows the outbox revived."""
    return JobLedger(sessions).redeliver(job_id, outbox.revive_dead)


def targets(sessions: SessionFactory, job_id: int) -> dict[tuple[str, str], DeliveryState]:
    with sessions() as session:
        rows = session.scalars(select(Delivery)).all()
        return {(row.result.kind, row.destination): row.state for row in rows}


def test_each_result_is_planned_for_each_destination_that_takes_it(
    sessions: SessionFactory, settings: Settings
) -> None:
    job_id = analyzed_job(sessions, settings)
    assert targets(sessions, job_id) == {
        ("SEG", "pacs"): DeliveryState.PENDING,
        ("SR", "pacs"): DeliveryState.PENDING,
        ("SR", "viewer"): DeliveryState.PENDING,
        ("SC", "viewer"): DeliveryState.PENDING,
    }  # nothing for "lung-only": it takes another model's results
    outbox = Outbox(sessions, settings)
    due = outbox.claim_due(job_id)
    assert sorted((d.kind, d.destination, d.attempt) for d in due) == [
        ("SC", "viewer", 1), ("SEG", "pacs", 1), ("SR", "pacs", 1), ("SR", "viewer", 1),
    ]  # fmt: skip
    # A second pass at the same time (a duplicated message) finds nothing to take.
    assert outbox.claim_due(job_id) == []


def test_failures_back_off_then_dead_letter_and_retry_resends(
    sessions: SessionFactory, settings: Settings
) -> None:
    job_id = analyzed_job(sessions, settings)
    outbox = Outbox(sessions, settings)
    due = outbox.claim_due(job_id)
    viewer = [d.id for d in due if d.destination == "viewer"]
    outbox.stored([d.id for d in due if d.destination == "pacs"])  # no commitment here
    for attempt in range(1, settings.delivery_attempts + 1):
        outbox.failed(viewer, f"HTTP 503 (attempt {attempt})")
        settled = settle(sessions, outbox, job_id)
        if attempt < settings.delivery_attempts:
            assert settled.state is JobState.DELIVERING
            # Backoff: the next attempt waits (jittered), and is not due before.
            assert settled.wait_seconds is not None and 0 < settled.wait_seconds <= 0.4
            assert outbox.claim_due(job_id) == []
            time.sleep(0.45)  # past the cap: each row has its own jittered wait
            again = outbox.claim_due(job_id)
            assert sorted(d.id for d in again) == sorted(viewer)
            assert {d.attempt for d in again} == {attempt + 1}
    assert settled.state is JobState.FAILED and settled.wait_seconds is None
    with sessions() as session:
        verdict = outbox.settlement(session, job_id)
    assert isinstance(verdict, Undeliverable) and "to viewer" in verdict.reason
    with sessions() as session:
        job = session.get_one(Job, job_id)
        assert "dead-lettered: 2 object(s) to viewer after 3 attempt(s)" in job.error
        assert "HTTP 503 (attempt 3)" in job.error
        dead = session.scalars(select(Delivery).where(Delivery.state == DeliveryState.DEAD))
        assert sorted(r.id for r in dead) == sorted(viewer)
        history = session.scalars(
            select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_pk == viewer[0])
        ).all()
        assert history == ["failed", "failed", "failed"]
        # The result's summary says the last error; the SEG went only to pacs.
        kinds = {r.result.kind: r.result for r in session.scalars(select(Delivery))}
        assert kinds["SEG"].delivered_at is not None and kinds["SR"].delivered_at is None
        assert kinds["SC"].delivery_error == "HTTP 503 (attempt 3)"

    # The operator's retry revives exactly the dead rows, with fresh attempts.
    assert retry_deliveries(sessions, outbox, job_id) == 2
    assert retry_deliveries(sessions, outbox, job_id) == 0  # delivering again, not failed
    again = outbox.claim_due(job_id)
    assert sorted(d.id for d in again) == sorted(viewer) and {d.attempt for d in again} == {1}
    outbox.stored(viewer)
    with sessions() as session:
        assert outbox.settlement(session, job_id) == Delivered()
    assert settle(sessions, outbox, job_id).state is JobState.SUCCEEDED


def test_storage_commitment_report_decides_delivery(
    sessions: SessionFactory, settings: Settings
) -> None:
    job_id = analyzed_job(sessions, settings)
    outbox = Outbox(sessions, settings)
    due = outbox.claim_due(job_id)
    pacs = {d.sop_instance_uid: d.id for d in due if d.destination == "pacs"}
    outbox.stored([d.id for d in due if d.destination == "viewer"])
    outbox.stored(list(pacs.values()), transaction_uid="2.25.77")
    settled = settle(sessions, outbox, job_id)
    assert settled.state is JobState.DELIVERING  # stored is not committed
    with sessions() as session:
        assert isinstance(outbox.settlement(session, job_id), StillDelivering)
    assert targets(sessions, job_id)[("SEG", "pacs")] is DeliveryState.COMMITTING

    # The archive commits the SEG and refuses the SR; a report for an unknown
    # transaction changes nothing.
    assert outbox.commitment_report("2.25.99", ["2.25.1"], {}) == set()
    jobs = outbox.commitment_report("2.25.77", ["2.25.1"], {"2.25.2": "0x0112 no such object"})
    assert jobs == {job_id}
    state = targets(sessions, job_id)
    assert state[("SEG", "pacs")] is DeliveryState.DELIVERED
    assert state[("SR", "pacs")] is DeliveryState.PENDING
    with sessions() as session:
        row = session.get_one(Delivery, pacs["2.25.2"])
        assert row.last_error == "storage commitment failed: 0x0112 no such object"
        assert row.transaction_uid is None

    # Sent again; this time the report never comes: late counts as a failed attempt.
    time.sleep(0.45)
    (retry,) = outbox.claim_due(job_id)
    assert (retry.sop_instance_uid, retry.attempt) == ("2.25.2", 2)
    outbox.stored([retry.id], transaction_uid="2.25.78")
    time.sleep(settings.commitment_timeout_seconds + 0.1)
    assert outbox.claim_due(job_id) == []  # the late one fails instead of being sent
    with sessions() as session:
        row = session.get_one(Delivery, retry.id)
        assert row.state is DeliveryState.PENDING
        assert row.last_error == "no storage commitment report within 0.5 s"


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for failures, step in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (20, 60.0)]:
        waits = [backoff_seconds(failures, 2.0, 60.0) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits)
        assert max(waits) - min(waits) > step / 10  # jittered, not one value


def test_enqueued_at_is_when_a_delayed_message_is_due(
    sessions: SessionFactory, settings: Settings
) -> None:
    job_id = analyzed_job(sessions, settings)
    JobLedger(sessions).mark_enqueued(job_id, countdown=120)
    # Not stale for the reconciler until two minutes after it was due.
    assert JobLedger(sessions).stale(utcnow(), timedelta(seconds=5)) == []
    assert JobLedger(sessions).stale(utcnow() + timedelta(seconds=130), timedelta(seconds=5)) == [
        (job_id, JobState.DELIVERING)
    ]


def test_delivery_passes_racing_for_one_job_claim_each_row_once(
    sessions: SessionFactory, settings: Settings
) -> None:
    """The delivery worker runs passes in threads: racing passes of one job (a duplicated
    message) never both take a row, on SQLite too, where FOR UPDATE is ignored."""
    outbox = Outbox(sessions, settings)
    job_id = analyzed_job(sessions, settings)
    start = threading.Barrier(8)

    def claim(_: int) -> list[int]:
        start.wait()
        return [due.id for due in outbox.claim_due(job_id)]

    with ThreadPoolExecutor(8) as pool:
        claims = [row for rows in pool.map(claim, range(8)) for row in rows]
    assert len(claims) == len(set(claims)) == 4  # every due row, each by one pass
