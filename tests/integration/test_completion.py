"""Series completion on a real database (SQLite, then PostgreSQL): the evidence the index
keeps as instances are recorded, the judgement at an explicit moment (grace, quiet
period), the release of an association, a wrong early call undone by late instances,
and migration 0010 filling in the series already held."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import Engine, select, text

from models.registry import ModelPackage, ModelRegistry
from node.acceptor.record import AssociationRecord
from node.completion import SeriesCompletion
from node.completion_release import SeriesRelease
from node.completion_settings import CompletionRule
from node.db.migrate import alembic_config, upgrade_to_head
from node.db.models import Instance, Job, Series, SeriesState
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.identity_cache import IdentityCache
from node.index import InstanceHeader, Received, record
from node.jobs.celery_app import make_celery
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.scheduler import Scheduler
from node.series_state import REOPENED
from node.settings import Settings
from tests.factories import MASS, fake_manifest, make_ct_series

CT_MODEL = fake_manifest("ct-model", "classification", classes=[{"name": "mass", "finding": MASS}])


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(Settings(data_dir=tmp_path, database_url=database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    upgrade_to_head(engine)
    return make_session_factory(engine)


def ct(slices: int = 40, uid: str = "1.2.826.0.1.3680043.10.543.7") -> list[Dataset]:
    return make_ct_series(np.zeros((slices, 4, 4)), series_uid=uid)


class Receiver:
    """Records instances as the group committer does: one shared identity cache, so the
    first instance of a series takes the ORM path and the others the cached one."""

    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions
        self.cache = IdentityCache()

    def store(self, datasets: list[Dataset], calling: str = "CT1") -> AssociationRecord:
        association = AssociationRecord("127.0.0.1", 104, calling_ae_title=calling)
        for ds in datasets:
            header = InstanceHeader.from_dataset(ds, ExplicitVRLittleEndian)
            received = Received(size=1, digest=ds.SOPInstanceUID, calling_aet=calling,
                                duplicate_policy="keep_first")  # fmt: skip
            with transaction(self.sessions) as session:
                _outcome, key = record(session, header, received, lambda _new: None, self.cache)
            if key is not None:
                self.cache.learn({header.series_instance_uid: key})
            association.kept(header)
        return association

    def release(self, association: AssociationRecord) -> int:
        association.outcome = "released"
        return SeriesRelease(self.sessions, wake=lambda: None).mark_released(association)


def one_series(sessions: SessionFactory) -> Series:
    with sessions() as session:
        return session.scalars(select(Series)).one()


def judge(completion: SeriesCompletion, sessions: SessionFactory, after: float) -> str | None:
    """Judge the series ``after`` seconds past its last instance: why complete, or None.
    The verdict is rolled back, so the same series can be judged again later."""
    last = one_series(sessions).last_received_at
    last = last if last.tzinfo is not None else last.replace(tzinfo=UTC)  # SQLite: naive UTC
    with sessions() as session:
        complete = completion.complete_series(session, last + timedelta(seconds=after))
        reason = complete[0].completed_by if complete else None
        session.rollback()
    return reason


def test_the_index_keeps_the_evidence(sessions: SessionFactory) -> None:
    receiver = Receiver(sessions)
    datasets = ct()
    datasets[7].ImagesInAcquisition = 40
    receiver.store(datasets[20:] + datasets[:20])  # out of order, as senders may
    series = one_series(sessions)
    assert (series.instance_count, series.min_instance_number, series.max_instance_number) == (
        40, 1, 40,
    )  # fmt: skip
    assert (series.images_in_acquisition, series.calling_ae_title) == (40, "CT1")
    assert (series.number_of_frames, series.temporal_positions, series.released_at) == (
        None, None, None,
    )  # fmt: skip
    with sessions() as session:
        positions = sorted(session.scalars(select(Instance.slice_position)))
    assert positions == pytest.approx([2.5 * i for i in range(40)])  # the factory's spacing


def test_released_series_complete_after_the_grace(sessions: SessionFactory) -> None:
    receiver = Receiver(sessions)
    association = receiver.store(ct())
    completion = SeriesCompletion(stable_seconds=30, grace_seconds=2)
    assert judge(completion, sessions, after=5) is None  # not released: wait for quiet
    assert receiver.release(association) == 1
    assert judge(completion, sessions, after=1.9) is None  # within the grace
    assert judge(completion, sessions, after=2) == (
        "evidence: CT1 released the association after Instance Numbers 1..40 without a gap, "
        "evenly spaced"
    )


def test_a_series_with_a_gap_waits_for_the_quiet_period(sessions: SessionFactory) -> None:
    receiver = Receiver(sessions)
    datasets = ct()
    receiver.release(receiver.store(datasets[:19] + datasets[20:]))  # slice 20 missing
    completion = SeriesCompletion(stable_seconds=30, grace_seconds=2)
    assert judge(completion, sessions, after=2) is None
    assert judge(completion, sessions, after=29) is None
    assert judge(completion, sessions, after=30) == ("quiet period (30 s without a new instance)")
    # The same series from a sender whose associations carry whole series: at the release,
    # without the grace.
    rules = {"CT1": CompletionRule(kind="release")}
    assert judge(SeriesCompletion(30, 2, rules), sessions, after=0) == (
        "evidence: CT1 released the association (its rule: release)"
    )
    # And from one whose data are no evidence, while "*" covers the others.
    rules = {"CT1": CompletionRule(kind="quiet"), "*": CompletionRule(kind="release")}
    assert judge(SeriesCompletion(30, 2, rules), sessions, after=2) is None


def test_an_aborted_association_releases_nothing(sessions: SessionFactory) -> None:
    receiver = Receiver(sessions)
    association = receiver.store(ct())
    association.outcome = "aborted by the peer"
    assert SeriesRelease(sessions, wake=lambda: None).mark_released(association) == 0
    assert one_series(sessions).released_at is None


@pytest.fixture
def scheduler(tmp_path: Path, sessions: SessionFactory, machine_redis_url: str) -> Scheduler:
    # No grace: what is judged is the evidence, at once, and the quiet period is far away.
    settings = Settings(data_dir=tmp_path, stable_seconds=300, completion_grace_seconds=0)
    registry = ModelRegistry(packages=[ModelPackage(tmp_path / "m", CT_MODEL)])
    ledger = JobLedger(sessions)
    queue = JobQueue(make_celery(machine_redis_url, settings.visibility_timeout_seconds), ledger)
    return Scheduler(settings, sessions, registry, queue, ledger)


def test_late_instances_after_an_early_call_run_the_job_again(
    scheduler: Scheduler, sessions: SessionFactory
) -> None:
    receiver = Receiver(sessions)
    datasets = ct()
    receiver.release(receiver.store(datasets[:25]))  # a sender that stopped half-way
    (first,) = scheduler.route_complete_series()
    assert "Instance Numbers 1..25" in one_series(sessions).completed_by
    association = receiver.store(datasets[25:])
    series = one_series(sessions)
    assert (series.state, series.state_reason) == (SeriesState.RECEIVING, REOPENED)
    assert scheduler.route_complete_series() == []  # the second association is not released
    receiver.release(association)
    (second,) = scheduler.route_complete_series()
    series = one_series(sessions)
    assert series.state is SeriesState.ROUTED and "Instance Numbers 1..40" in series.completed_by
    with sessions() as session:
        assert [job.id for job in session.scalars(select(Job).order_by(Job.id))] == [
            first, second,
        ]  # fmt: skip


def test_migration_fills_in_the_series_held(engine: Engine) -> None:
    config = alembic_config(engine)
    command.upgrade(config, "0009")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO patient (id, patient_id, issuer, patient_name, birth_date, sex) "
            "VALUES (1, 'P', '', '', '', '')"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO study (id, study_instance_uid, patient_pk, study_date, accession_number,"
            " study_description, first_received_at, patient_conflicts) "
            "VALUES (1, '1.2', 1, '', '', '', CURRENT_TIMESTAMP, '')"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO series (id, series_instance_uid, study_pk, modality, body_part_examined,"
            " series_description, sop_class_uid, image_type, state, state_reason,"
            " last_received_at) VALUES (1, '1.2.3', 1, 'CT', '', '', '', '', 'ROUTED', '',"
            " CURRENT_TIMESTAMP)"
        ))  # fmt: skip
        for number in (3, 1, 2):
            connection.execute(text(
                "INSERT INTO instance (sop_instance_uid, series_pk, sop_class_uid,"
                " transfer_syntax_uid, instance_number, path, size_bytes, digest,"
                " calling_ae_title, received_at) VALUES (:uid, 1, '1.2', '1.2', :number,"
                " 'p', 1, '', 'CT1', CURRENT_TIMESTAMP)"
            ), {"uid": f"1.2.3.{number}", "number": number})  # fmt: skip
    command.upgrade(config, "head")
    with engine.connect() as connection:
        row = connection.execute(text(
            "SELECT instance_count, min_instance_number, max_instance_number, completed_by,"
            " calling_ae_title FROM series"
        )).one()  # fmt: skip
    assert tuple(row) == (3, 1, 3, "", "")
