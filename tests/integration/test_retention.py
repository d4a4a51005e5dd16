"""Retention on a real node database (SQLite, then PostgreSQL) with real files.

Studies are received by the node's own Storage SCP from DCMTK's storescu, so their
files and rows are the receiver's; their jobs go through the ledger and their results
are written durably into the results folder. Then each study is put in one situation
(old and settled, old with a dead-lettered result, old and running, old and still
receiving, recent) and the sweep is run: only what is settled goes, files and rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update

from node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    JobStep,
    Patient,
    ResultKind,
    ResultObject,
    Series,
    SeriesState,
    Study,
    utcnow,
)
from node.db.session import SessionFactory, transaction
from node.delivery.destinations import DicomDestination
from node.delivery.outbox import Outbox
from node.jobs.ledger import JobLedger, NewResult
from node.retention import Deleted, Retention
from node.scp import StorageSCP
from node.storage import DurableFolder
from tests.factories import make_ct_series, write_series
from tests.receive_node import running_scp, storescu

LOST = timedelta(seconds=60)
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
ARCHIVE = DicomDestination(name="pacs", dicom="PACS@127.0.0.1:104")


@dataclass
class Received:
    files: list[Path]  # as sent
    study_uid: str
    job_id: int = 0


@pytest.fixture
def scp(database_url: str, tmp_path: Path) -> Iterator[StorageSCP]:
    with running_scp(tmp_path / "var", database_url=database_url) as scp:
        yield scp


def receive(scp: StorageSCP, folder: Path, name: str) -> Received:
    series = make_ct_series(np.full((3, 16, 16), -800.0), patient_id=name, series_description=name)
    files = write_series(series, folder / name)
    result = storescu(scp.settings.dicom_port, *files)
    assert result.returncode == 0, result.stderr
    return Received(files, str(series[0].StudyInstanceUID))


def analyse(scp: StorageSCP, study: Received, *, destinations: list | None = None) -> int:
    """The series routed, a job run through the ledger, an SR written as its result."""
    sessions = scp.sessions
    with transaction(sessions) as session:
        series = session.scalars(
            select(Series).join(Study).where(Study.study_instance_uid == study.study_uid)
        ).one()
        series.state = SeriesState.ROUTED  # as routing's verdict writes it
        job = Job(series=series, model_name="m", model_version="1")
        session.add(job)
        session.flush()
        job_id = job.id
    ledger = JobLedger(sessions)
    attempt = ledger.start(job_id, LOST)
    assert attempt == 1
    with ledger.step(job_id, attempt, "load"):
        pass
    relative = Path(f"{job_id}/sr-2.25.{job_id}.dcm")
    DurableFolder(scp.settings.results_dir).write(relative, b"an SR")
    result = NewResult(ResultKind.SR, SR_CLASS, f"2.25.{job_id}", str(relative))
    ledger.analyzed(job_id, {}, [result], destinations or [])
    study.job_id = job_id
    return job_id


def age(sessions: SessionFactory, study: Received, days: float) -> None:
    """The study's instances arrived, and its jobs finished, ``days`` ago."""
    then = utcnow() - timedelta(days=days)
    with transaction(sessions) as session:
        study_pk = select(Study.id).where(Study.study_instance_uid == study.study_uid)
        session.execute(
            update(Series).where(Series.study_pk.in_(study_pk)).values(last_received_at=then)
        )
        series_pks = select(Series.id).where(Series.study_pk.in_(study_pk))
        session.execute(
            update(Job)
            .where(Job.series_pk.in_(series_pks), Job.finished_at.is_not(None))
            .values(finished_at=then)
        )


def files_of(scp: StorageSCP, study: Received) -> list[Path]:
    spool = scp.settings.spool_dir / study.study_uid
    results = scp.settings.results_dir / str(study.job_id)
    return sorted(p for folder in (spool, results) for p in folder.rglob("*") if p.is_file())


def rows(sessions: SessionFactory) -> dict[str, int]:
    with sessions() as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Patient, Study, Series, Instance, Job, JobStep, ResultObject, Delivery)
        }


def test_retention_deletes_only_settled_studies(scp: StorageSCP, tmp_path: Path) -> None:
    sessions, settings = scp.sessions, scp.settings
    outbox = Outbox(sessions, settings)
    ledger = JobLedger(sessions)
    names = ("done", "dead", "running", "receiving", "recent")
    studies = {name: receive(scp, tmp_path / "in", name) for name in names}

    analyse(scp, studies["done"])
    ledger.settle(studies["done"].job_id, outbox.settlement)  # nothing to send: SUCCEEDED
    analyse(scp, studies["dead"], destinations=[ARCHIVE])
    with transaction(sessions) as session:  # every attempt failed: dead-lettered
        session.execute(update(Delivery).values(state=DeliveryState.DEAD, last_error="refused"))
    ledger.settle(studies["dead"].job_id, outbox.settlement)
    with transaction(sessions) as session:
        uid = studies["running"].study_uid
        series = session.scalars(
            select(Series).join(Study).where(Study.study_instance_uid == uid)
        ).one()
        session.add(Job(series=series, model_name="m", model_version="1", state=JobState.RUNNING))
    analyse(scp, studies["recent"])
    ledger.settle(studies["recent"].job_id, outbox.settlement)
    for name in ("done", "dead", "running", "receiving"):
        age(sessions, studies[name], days=40)
    with sessions() as session:
        states = dict(session.execute(select(Job.id, Job.state)).tuples().all())
    assert states[studies["done"].job_id] is JobState.SUCCEEDED
    assert states[studies["dead"].job_id] is JobState.FAILED
    before = {name: files_of(scp, study) for name, study in studies.items()}
    assert len(before["done"]) == 4  # three instances and the SR

    deleted = Retention(settings, sessions).sweep()

    assert deleted == [Deleted(studies["done"].study_uid, "age", instances=3, results=1)]
    assert files_of(scp, studies["done"]) == []
    for name in ("dead", "running", "receiving", "recent"):
        assert files_of(scp, studies[name]) == before[name], name
    assert rows(sessions) == {
        "Patient": 4, "Study": 4, "Series": 4, "Instance": 12, "Job": 3,
        "JobStep": 2, "ResultObject": 2, "Delivery": 1,
    }  # fmt: skip

    # The PACS sends the deleted study again: received as new, into the folders it had.
    result = storescu(settings.dicom_port, *studies["done"].files)
    assert result.returncode == 0, result.stderr
    with sessions() as session:
        paths = session.scalars(
            select(Instance.path)
            .join(Series)
            .join(Study)
            .where(Study.study_instance_uid == studies["done"].study_uid)
        ).all()
    assert len(paths) == 3 and all((settings.spool_dir / p).is_file() for p in paths)


def test_disk_pressure_deletes_the_oldest_settled_study_first(
    scp: StorageSCP, tmp_path: Path
) -> None:
    sessions = scp.sessions
    outbox, ledger = Outbox(sessions, scp.settings), JobLedger(sessions)
    older, newer = (receive(scp, tmp_path / "in", name) for name in ("older", "newer"))
    for study, days in ((older, 3), (newer, 1)):
        analyse(scp, study)
        ledger.settle(study.job_id, outbox.settlement)
        age(sessions, study, days)
    settings = scp.settings.model_copy(update={"retention_days": 30, "min_free_bytes": 10**6})
    older_files = files_of(scp, older)

    def free_space() -> int:
        """The disk is short until the older study's files are gone."""
        return 0 if any(p.exists() for p in older_files) else 10**9

    deleted = Retention(settings, sessions, free_space=free_space).sweep()

    assert deleted == [Deleted(older.study_uid, "disk", instances=3, results=1)]
    assert files_of(scp, newer) != []


def test_a_study_whose_files_a_crash_already_removed_is_finished_at_start(
    scp: StorageSCP, tmp_path: Path
) -> None:
    sessions, settings = scp.sessions, scp.settings
    study = receive(scp, tmp_path / "in", "interrupted")
    analyse(scp, study)
    JobLedger(sessions).settle(study.job_id, Outbox(sessions, settings).settlement)
    age(sessions, study, days=40)
    # A crash between the files and the rows: the files are gone, the rows remain.
    for path in files_of(scp, study):
        path.unlink()
    retention = Retention(settings, sessions)

    assert retention.remove_empty_folders() == 3  # the study's, its series' and its job's
    assert [gone.study_instance_uid for gone in retention.sweep()] == [study.study_uid]

    assert rows(sessions)["Study"] == 0
    assert (settings.spool_dir / ".incoming").is_dir() and settings.results_dir.is_dir()
