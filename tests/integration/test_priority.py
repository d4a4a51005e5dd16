"""A job's priority: decided once by routing (the settings' rules, the workitem), sent at
that priority to the machine's Redis, kept when the reconciler, a retry or a re-analysis
sends it again, and shown by the API; over SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest
import redis
from pydicom import Dataset
from sqlalchemy import select

from models.registry import ModelPackage, ModelRegistry
from node.auth.principal import Principal
from node.auth.roles import Role
from node.db.migrate import upgrade_to_head
from node.db.models import Job, JobState, Series, utcnow
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.db.worklist import UpsPriority, Workitem, WorkitemOrigin
from node.delivery.outbox import Outbox
from node.index import InstanceHeader, Received, index_instance
from node.jobs.celery_app import broker_lists, make_celery
from node.jobs.contracts import GPU_QUEUE, IO_QUEUE
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.jobs.retry import JobReanalysis, JobRetry
from node.priority import JobPriorities
from node.scheduler import Scheduler
from node.settings import Settings
from tests.factories import LUNG, fake_manifest
from tests.web_node import Node

STAT, HIGH, MEDIUM, LOW = UpsPriority
CT = "1.2.840.10008.5.1.4.1.1.2"
RULES = [
    {"priority": "STAT", "calling_ae_title": "EDCT"},  # the emergency department's CT
    {"priority": "HIGH", "series_description": "stroke"},
    {"priority": "LOW", "calling_ae_title": "RESEARCH"},
    # every condition must hold: a head CT of a study described as a code stroke
    {
        "priority": "STAT",
        "modality": "ct",
        "body_part_examined": "head",
        "study_description": "^code stroke",
    },
]
SEGMENT = {"label": 1, "name": "Lung", "category": LUNG, "type": LUNG}
OPERATOR = Principal("op", Role.OPERATOR, "token")


@pytest.fixture
def sessions(database_url: str, tmp_path: Path) -> Iterator[SessionFactory]:
    engine = make_engine(Settings(data_dir=tmp_path, database_url=database_url))
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def scheduler(tmp_path: Path, sessions: SessionFactory, machine_redis_url: str) -> Scheduler:
    settings = Settings(data_dir=tmp_path, stable_seconds=0, priority_rules=RULES)
    model = fake_manifest("ct-model", "segmentation", segments=[SEGMENT])
    registry = ModelRegistry(packages=[ModelPackage(tmp_path / "a", model)])
    ledger = JobLedger(sessions)
    queue = JobQueue(make_celery(machine_redis_url, settings.visibility_timeout_seconds), ledger)
    return Scheduler(settings, sessions, registry, queue, ledger)


def store(
    sessions: SessionFactory,
    name: str,
    calling_aet: str = "CT1",
    series_description: str = "",
    study_description: str = "",
    body_part: str = "",
    modality: str = "CT",
) -> str:
    """One instance of a series of its own study, received from ``calling_aet``; the
    series' UID."""
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.StudyInstanceUID = f"1.2.9.{name}"
    ds.SeriesInstanceUID = f"1.2.9.{name}.1"
    ds.SOPInstanceUID = f"1.2.9.{name}.1.1"
    ds.Modality = modality
    ds.PatientID = f"P{name}"
    ds.SeriesDescription = series_description
    ds.StudyDescription = study_description
    ds.BodyPartExamined = body_part
    header = InstanceHeader.from_dataset(ds, "1.2.840.10008.1.2.1")
    received = Received(
        size=10, digest=name, calling_aet=calling_aet, duplicate_policy="keep_first"
    )
    index_instance(sessions, header, received, place=lambda: None, unplace=lambda: None)
    return str(ds.SeriesInstanceUID)


def waiting(url: str, queue: str) -> dict[UpsPriority, list[int]]:
    """The job ids waiting on ``queue``, per priority list, oldest first; every message's
    own ``priority`` checked against the list it waits on."""
    client = redis.Redis.from_url(url)
    found: dict[UpsPriority, list[int]] = {}
    for priority, key in zip(UpsPriority, broker_lists(queue), strict=True):
        messages = [json.loads(raw) for raw in reversed(client.lrange(key, 0, -1))]
        assert all(m["properties"]["priority"] == priority.rank for m in messages)
        if messages:
            found[priority] = [json.loads(m["headers"]["argsrepr"])[0] for m in messages]
    return found


def priorities_by_series(sessions: SessionFactory) -> dict[str, UpsPriority]:
    with sessions() as session:
        jobs = session.scalars(select(Job).join(Series)).all()
        return {job.series.series_instance_uid: job.priority for job in jobs}


def test_rules_decide_each_jobs_priority_and_its_queue(
    scheduler: Scheduler, sessions: SessionFactory, machine_redis_url: str
) -> None:
    expected = {
        store(sessions, "1", calling_aet="EDCT"): STAT,
        store(sessions, "2", series_description="HEAD Stroke protocol"): HIGH,
        store(sessions, "3", calling_aet="RESEARCH"): LOW,
        # a LOW rule and a HIGH one: the highest
        store(sessions, "4", calling_aet="RESEARCH", series_description="stroke"): HIGH,
        store(sessions, "5", body_part="HEAD", study_description="Code stroke CT"): STAT,
        # the same head CT in a routine study: not every condition holds
        store(sessions, "6", body_part="HEAD", study_description="Routine head"): MEDIUM,
        store(sessions, "7"): MEDIUM,  # nothing applies
    }
    job_ids = scheduler.route_complete_series()
    assert len(job_ids) == len(expected)
    assert priorities_by_series(sessions) == expected
    queued = waiting(machine_redis_url, GPU_QUEUE)
    with sessions() as session:
        by_priority = {
            p: sorted(j.id for j in session.scalars(select(Job)) if j.priority is p)
            for p in UpsPriority
        }
    assert {p: sorted(ids) for p, ids in queued.items()} == {
        p: ids for p, ids in by_priority.items() if ids
    }


def test_a_requested_workitems_priority_counts_the_nodes_own_does_not(
    sessions: SessionFactory,
) -> None:
    ct = store(sessions, "1")
    pet = store(sessions, "2", calling_aet="EDCT", modality="PT")
    research = store(sessions, "3", calling_aet="RESEARCH")
    with transaction(sessions) as session:
        for uid, origin, priority in [
            ("2.25.1", WorkitemOrigin.REQUESTED, STAT),
            ("2.25.2", WorkitemOrigin.REQUESTED, LOW),
            ("2.25.3", WorkitemOrigin.NODE, STAT),
            ("2.25.4", WorkitemOrigin.PULLED, HIGH),
        ]:
            session.add(Workitem(sop_instance_uid=uid, origin=origin, priority=priority))
    rules = JobPriorities(Settings(priority_rules=RULES).priority_rules)
    with sessions() as session:
        series = {s.series_instance_uid: s for s in session.scalars(select(Series))}
        item = {w.sop_instance_uid: w for w in session.scalars(select(Workitem))}
        assert rules.of([series[ct]], item["2.25.1"]) is STAT
        assert rules.of([series[ct]], item["2.25.2"]) is LOW  # asked for LOW, no rule
        assert rules.of([series[research]], item["2.25.4"]) is HIGH  # over the LOW rule
        assert rules.of([series[ct]], item["2.25.3"]) is MEDIUM  # follows the job
        # a multimodal job: a further input from the emergency department's modality
        assert rules.of([series[ct], series[pet]]) is STAT
        assert JobPriorities().of([series[pet]]) is MEDIUM  # no rules, no workitem


def test_resent_retried_and_reanalysed_jobs_keep_their_priority(
    scheduler: Scheduler, sessions: SessionFactory, machine_redis_url: str
) -> None:
    store(sessions, "1", calling_aet="EDCT")
    (job_id,) = scheduler.route_complete_series()
    broker = redis.Redis.from_url(machine_redis_url)
    assert waiting(machine_redis_url, GPU_QUEUE) == {STAT: [job_id]}

    broker.flushdb()  # Redis lost its messages: the reconciler sends it again, as STAT
    assert scheduler.reconcile(older_than=timedelta(seconds=0)) == [job_id]
    assert waiting(machine_redis_url, GPU_QUEUE) == {STAT: [job_id]}

    broker.flushdb()  # its worker was lost while running it: run again, as STAT
    ledger = scheduler.ledger
    lost_after = timedelta(seconds=scheduler.settings.lost_worker_seconds)
    assert ledger.start(job_id, lost_after) == 1
    with transaction(sessions) as session:
        session.get_one(Job, job_id).heartbeat_at = utcnow() - lost_after * 2
    assert scheduler.reconcile(older_than=timedelta(seconds=0)) == [job_id]
    assert waiting(machine_redis_url, GPU_QUEUE) == {STAT: [job_id]}

    broker.flushdb()  # it failed; an operator retries it
    assert ledger.start(job_id, lost_after) == 2
    ledger.fail(job_id, "no pixel data")
    JobRetry(ledger, Outbox(sessions, scheduler.settings), scheduler.queue)(job_id, OPERATOR, "")
    assert waiting(machine_redis_url, GPU_QUEUE) == {STAT: [job_id]}

    broker.flushdb()  # an admin has it analysed again
    assert ledger.start(job_id, lost_after) == 3
    ledger.fail(job_id, "no pixel data")
    admin = Principal("admin", Role.ADMIN, "token")
    JobReanalysis(ledger, scheduler.queue)(job_id, admin, "new model weights")
    assert waiting(machine_redis_url, GPU_QUEUE) == {STAT: [job_id]}
    with sessions() as session:
        assert session.get_one(Job, job_id).state is JobState.QUEUED

    broker.flushdb()  # its results go out before the routine ones too
    scheduler.queue.send_delivery(job_id)
    assert waiting(machine_redis_url, IO_QUEUE) == {STAT: [job_id]}


def test_a_rule_without_a_condition_or_with_a_broken_pattern_stops_the_node() -> None:
    with pytest.raises(pydantic.ValidationError, match="names at least one of"):
        Settings(priority_rules=[{"priority": "STAT"}])
    with pytest.raises(pydantic.ValidationError, match="pattern"):
        Settings(priority_rules=[{"priority": "STAT", "series_description": "(stroke"}])
    with pytest.raises(pydantic.ValidationError, match="not an AE title"):
        Settings(priority_rules=[{"priority": "STAT", "calling_ae_title": "A" * 17}])
    with pytest.raises(pydantic.ValidationError):
        Settings(priority_rules=[{"priority": "URGENT", "modality": "CT"}])
    from_env = Settings.model_validate({"priority_rules": json.dumps(RULES[:1])})
    assert from_env.priority_rules[0].priority is STAT


def test_the_api_shows_each_jobs_priority_and_the_studys_most_urgent(node: Node) -> None:
    jobs = node.client.get("/api/jobs").json()
    assert {job["priority"] for job in jobs} == {"MEDIUM"}
    urgent = next(job for job in jobs if job["model_name"] == "bleed")
    with transaction(node.sessions) as session:
        session.get_one(Job, urgent["id"]).priority = STAT
    assert node.client.get(f"/api/jobs/{urgent['id']}").json()["priority"] == "STAT"
    studies = {s["study_instance_uid"]: s for s in node.client.get("/api/studies").json()}
    assert studies[urgent["study_instance_uid"]]["priority"] == "STAT"
    others = [s for uid, s in studies.items() if uid != urgent["study_instance_uid"]]
    assert others and all(s["priority"] in ("MEDIUM", None) for s in others)
    shown = studies[urgent["study_instance_uid"]]
    series_jobs = [job for series in shown["series"] for job in series["jobs"]]
    assert {job["priority"] for job in series_jobs} >= {"STAT"}
