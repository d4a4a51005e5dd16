"""Completion, routing and job state on a real (SQLite) database, with a real Celery
application publishing to the machine's Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from pydicom import Dataset
from sqlalchemy import select

from models.manifest import ModelManifest
from models.registry import ModelPackage, ModelRegistry
from node.auth.principal import Principal
from node.auth.roles import Role
from node.db.migrate import upgrade_to_head
from node.db.models import Job, JobState, Series, SeriesState, utcnow
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.delivery.outbox import Outbox
from node.index import InstanceHeader, Received, index_instance
from node.jobs.celery_app import broker_lists, make_celery
from node.jobs.contracts import GPU_QUEUE
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.jobs.retry import JobRetry
from node.scheduler import SHORTEST_SLEEP, Scheduler
from node.settings import Settings
from tests.node_process import wait_for

CT = "1.2.840.10008.5.1.4.1.1.2"
LOST = timedelta(seconds=60)


def manifest(name: str, modality: str) -> ModelManifest:
    return ModelManifest.model_validate(
        {
            "name": name,
            "version": "1.0.0",
            "title": name,
            "task": "classification",
            "accepts": {"modality": [modality]},
            "network": {"architecture": "x", "weights": "w.pt", "sha256": "0" * 64},
            "outputs": {
                "classes": [{"name": "c", "finding": {"value": "1", "scheme": "S", "meaning": "m"}}]
            },
        }
    )


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[SessionFactory]:
    engine = make_engine(Settings(data_dir=tmp_path))
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def scheduler(tmp_path: Path, sessions: SessionFactory, machine_redis_url: str) -> Scheduler:
    settings = Settings(data_dir=tmp_path, stable_seconds=0)
    registry = ModelRegistry(
        packages=[
            ModelPackage(tmp_path / "a", manifest("ct-model", "CT")),
            ModelPackage(tmp_path / "b", manifest("mr-model", "MR")),
        ]
    )
    ledger = JobLedger(sessions)
    queue = JobQueue(make_celery(machine_redis_url, settings.visibility_timeout_seconds), ledger)
    return Scheduler(settings, sessions, registry, queue, ledger)


def store(sessions: SessionFactory, series: str, sop: str, modality: str = "CT") -> None:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.PatientID = "P1"
    header = InstanceHeader.from_dataset(ds, "1.2.840.10008.1.2.1")
    # The scheduler reads rows only: the instance needs no file in the spool here.
    received = Received(size=10, digest=sop, calling_aet="CT1", duplicate_policy="keep_first")
    index_instance(sessions, header, received, place=lambda: None, unplace=lambda: None)


def queued_messages(url: str) -> int:
    client = redis.Redis.from_url(url)
    return sum(int(client.llen(key)) for key in broker_lists(GPU_QUEUE))  # every priority


def test_complete_series_get_one_job_per_accepting_model(
    scheduler: Scheduler, sessions: SessionFactory, machine_redis_url: str
) -> None:
    store(sessions, "1.2.3.1", "1.2.3.1.1")
    store(sessions, "1.2.3.1", "1.2.3.1.2")
    store(sessions, "1.2.3.2", "1.2.3.2.1", modality="SR")
    job_ids = scheduler.route_complete_series()
    assert len(job_ids) == 1
    assert queued_messages(machine_redis_url) == 1  # the message carries the id only
    with sessions() as session:
        states = {s.series_instance_uid: s for s in session.scalars(select(Series))}
        job = session.get_one(Job, job_ids[0])
    assert states["1.2.3.1"].state is SeriesState.ROUTED
    assert job.model_name == "ct-model" and job.enqueued_at is not None
    assert states["1.2.3.2"].state is SeriesState.NO_MODEL
    assert "ct-model: modality SR not in ['CT']" in states["1.2.3.2"].state_reason
    # A second pass finds nothing new.
    assert scheduler.route_complete_series() == []


def test_quiet_period_holds_a_series_back(tmp_path: Path, sessions: SessionFactory) -> None:
    from node.completion import SeriesCompletion

    store(sessions, "1.2.3.1", "1.2.3.1.1")
    completion = SeriesCompletion(stable_seconds=30)
    with sessions() as session:
        assert completion.complete_series(session, utcnow()) == []
        later = utcnow() + timedelta(seconds=31)
        assert [s.series_instance_uid for s in completion.complete_series(session, later)] == [
            "1.2.3.1"
        ]


def test_a_series_whose_grace_ended_during_a_pass_is_due_at_once(
    tmp_path: Path, sessions: SessionFactory, machine_redis_url: str
) -> None:
    settings = Settings(data_dir=tmp_path, stable_seconds=30)
    ledger = JobLedger(sessions)
    queue = JobQueue(make_celery(machine_redis_url, settings.visibility_timeout_seconds), ledger)
    scheduler = Scheduler(settings, sessions, ModelRegistry(packages=[]), queue, ledger)
    scheduler.run_once()  # the reconciler's turn taken: only series deadlines remain
    store(sessions, "1.2.3.1", "1.2.3.1.1")
    grace = timedelta(seconds=settings.completion_grace_seconds)
    with transaction(sessions) as session:
        series = session.scalars(select(Series)).one()
        series.last_received_at = utcnow() - grace - timedelta(seconds=0.2)  # grace over
        judged_at = series.last_received_at + grace - timedelta(seconds=0.1)  # by a pass before
    # Judged before its grace ended (a pass that worked past it): due now, not in 30 s.
    assert scheduler.seconds_to_next_pass(judged_at) == SHORTEST_SLEEP
    # Judged after (and found without evidence): it waits for its quiet period.
    assert scheduler.seconds_to_next_pass() > 20


def test_new_instance_reopens_a_routed_series(
    scheduler: Scheduler, sessions: SessionFactory
) -> None:
    store(sessions, "1.2.3.1", "1.2.3.1.1")
    first = scheduler.route_complete_series()
    store(sessions, "1.2.3.1", "1.2.3.1.1")  # a duplicate: nothing to do
    assert scheduler.route_complete_series() == []
    store(sessions, "1.2.3.1", "1.2.3.1.2")  # a new instance: analyse again
    second = scheduler.route_complete_series()
    assert len(first) == len(second) == 1 and first != second


def test_job_lifecycle_and_retry(scheduler: Scheduler, sessions: SessionFactory) -> None:
    store(sessions, "1.2.3.1", "1.2.3.1.1")
    (job_id,) = scheduler.route_complete_series()
    ledger = scheduler.ledger
    with pytest.raises(ValueError, match="only a finished job"):
        ledger.reset_for_retry(job_id)
    assert ledger.start(job_id, LOST) == 1
    with pytest.raises(RuntimeError), ledger.step(job_id, 1, "load"):
        raise RuntimeError("no pixel data")
    ledger.fail(job_id, "no pixel data")
    assert ledger.start(job_id, LOST) is None  # a failed job is not taken again by a stray message
    retry = JobRetry(ledger, Outbox(sessions, scheduler.settings), scheduler.queue)
    operator = Principal("op", Role.OPERATOR, "token")
    retry(job_id, operator, "")  # failed analysis, no dead deliveries: analysed again
    assert ledger.state_of(job_id) is JobState.QUEUED
    assert ledger.start(job_id, LOST) == 2
    with sessions() as session:
        job = session.get_one(Job, job_id)
        (step,) = job.steps
    assert step.name == "load" and step.detail == "no pixel data" and step.seconds is not None
    with pytest.raises(LookupError):
        ledger.reset_for_retry(9999)


def test_reconciler_resends_what_the_broker_lost(
    scheduler: Scheduler, sessions: SessionFactory, machine_redis_url: str
) -> None:
    store(sessions, "1.2.3.1", "1.2.3.1.1")
    (job_id,) = scheduler.route_complete_series()
    redis.Redis.from_url(machine_redis_url).flushdb()  # Redis lost its data
    assert scheduler.reconcile(older_than=timedelta(seconds=0)) == [job_id]
    assert queued_messages(machine_redis_url) == 1


def multimodal_manifest() -> ModelManifest:
    data = manifest("ct-pet-model", "CT").model_dump(mode="json")
    data["additional_inputs"] = [{"role": "pet", "accepts": {"modality": ["PT"]}}]
    return ModelManifest.model_validate(data)


@pytest.fixture
def multimodal(tmp_path: Path, sessions: SessionFactory, machine_redis_url: str) -> Scheduler:
    settings = Settings(data_dir=tmp_path, stable_seconds=0)
    ledger = JobLedger(sessions)
    registry = ModelRegistry(packages=[ModelPackage(tmp_path / "m", multimodal_manifest())])
    queue = JobQueue(make_celery(machine_redis_url, settings.visibility_timeout_seconds), ledger)
    return Scheduler(settings, sessions, registry, queue, ledger)


@pytest.mark.parametrize("pet_first", [True, False])
def test_multimodal_job_waits_for_every_input_of_the_study(
    multimodal: Scheduler, sessions: SessionFactory, pet_first: bool
) -> None:
    scheduler = multimodal
    order = (
        [("1.2.3.9", "PT"), ("1.2.3.1", "CT")]
        if pet_first
        else [("1.2.3.1", "CT"), ("1.2.3.9", "PT")]
    )  # noqa: E501
    created = []
    for series_uid, modality in order:
        store(sessions, series_uid, series_uid + ".1", modality=modality)
        created.append(scheduler.route_complete_series())
    assert created[0] == [] and len(created[1]) == 1  # the series completing last makes it
    with sessions() as session:
        job = session.get_one(Job, created[1][0])
        (job_input,) = job.inputs
        assert job.series.series_instance_uid == "1.2.3.1"  # the primary (CT)
        assert (job_input.role, job_input.series.series_instance_uid) == ("pet", "1.2.3.9")
        states = {s.series_instance_uid: s.state for s in session.scalars(select(Series))}
    assert states == {"1.2.3.1": SeriesState.ROUTED, "1.2.3.9": SeriesState.ROUTED}


def test_primary_without_its_further_input_says_what_it_waits_for(
    multimodal: Scheduler, sessions: SessionFactory
) -> None:
    scheduler = multimodal
    store(sessions, "1.2.3.1", "1.2.3.1.1", modality="CT")
    assert scheduler.route_complete_series() == []
    with sessions() as session:
        series = session.scalars(select(Series)).one()
    assert series.state is SeriesState.NO_MODEL
    assert "ct-pet-model: waiting for a pet series in this study" in series.state_reason


def test_a_job_whose_worker_died_runs_again_and_a_live_one_is_left_alone(
    scheduler: Scheduler, sessions: SessionFactory, machine_redis_url: str
) -> None:
    store(sessions, "1.2.3.1", "1.2.3.1.1")
    (job_id,) = scheduler.route_complete_series()
    ledger = scheduler.ledger
    assert ledger.start(job_id, LOST) == 1
    # A re-delivered message while the worker still beats is ignored.
    assert ledger.start(job_id, LOST) is None
    redis.Redis.from_url(machine_redis_url).flushdb()
    assert scheduler.reconcile(older_than=timedelta(seconds=0)) == []
    # The worker stops beating (SIGKILL): once the heartbeat is old, the job runs again.
    with sessions() as session:
        session.get_one(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=61)
        session.commit()
    assert scheduler.reconcile(older_than=timedelta(seconds=0)) == [job_id]
    assert ledger.state_of(job_id) is JobState.QUEUED
    assert queued_messages(machine_redis_url) == 1
    assert ledger.start(job_id, LOST) == 2


def test_heartbeat_renews_a_running_job(scheduler: Scheduler, sessions: SessionFactory) -> None:
    from node.jobs.heartbeat import JobHeartbeat

    store(sessions, "1.2.3.1", "1.2.3.1.1")
    (job_id,) = scheduler.route_complete_series()
    scheduler.ledger.start(job_id, LOST)
    with sessions() as session:
        first = session.get_one(Job, job_id).heartbeat_at

    def renewed() -> bool:
        with sessions() as session:
            return session.get_one(Job, job_id).heartbeat_at != first

    with JobHeartbeat(scheduler.ledger, job_id, interval=0.05):
        wait_for(renewed, timeout=5, interval=0.05, what="a renewed heartbeat")
