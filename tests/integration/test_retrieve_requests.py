"""The runner of requested workitems, one pass at a time, against a real Orthanc.

The node's Storage SCP, workitem book, scheduler (completion and routing) and job queue
(on the machine's Redis) run in the test process; the runner's passes are called one
by one, so each step is seen: the claim, the retrieval, the wait for completion, the
jobs the workitem gets (the requested model only, at the workitem's priority, for a
study just retrieved and for one already held), and how it ends: CANCELED when its
analyses failed, when retrieval fails (the reason names method, peer and status), when
the requested model is not installed, when no model accepts the study, and on a cancel
request while SCHEDULED and while IN PROGRESS. Completion with results is the end to
end test's (tests/e2e/test_analysis_on_request.py: a real worker makes them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from models.registry import discover_packages
from node.completion_release import SeriesRelease
from node.db.models import Instance, Job, JobState, Series, SeriesState
from node.db.worklist import UpsPriority, UpsState, Workitem
from node.jobs.celery_app import make_celery
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.requests.request_runner import RequestRunner
from node.retrieve.retrieve_settings import RetrieveSource
from node.retrieve.retriever import StudyRetriever
from node.scheduler import Scheduler
from node.scp import StorageSCP
from node.ups.book import WorkitemBook
from tests.factories import make_ct_series, write_series
from tests.node_process import wait_for
from tests.orthanc import Orthanc, start_orthanc
from tests.receive_node import running_scp
from tests.workitems import analysis_request

SEG_MODEL = "ct-lung-nodule-seg"


@dataclass
class Node:
    scp: StorageSCP
    book: WorkitemBook
    runner: RequestRunner
    restarted: Callable[[], RequestRunner]  # a new runner, as after a restart of the node
    scheduler: Scheduler
    ledger: JobLedger
    orthanc: Orthanc
    ct_study: str
    mr_study: str

    def workitem(self, uid: str) -> Workitem:
        with self.scp.sessions() as session:
            row = session.scalars(select(Workitem).where(Workitem.sop_instance_uid == uid)).one()
            session.expunge(row)
            return row

    def jobs(self, uid: str) -> list[Job]:
        with self.scp.sessions() as session:
            row = self.workitem(uid)
            jobs = list(session.scalars(select(Job).where(Job.workitem_pk == row.id)))
            session.expunge_all()
            return jobs

    def complete_series(self, study_uid: str) -> None:
        """Let the scheduler complete and route the study's series (their grace passed)."""

        def receiving() -> bool:
            self.scheduler.route_complete_series()
            with self.scp.sessions() as session:
                states = session.scalars(
                    select(Series.state).where(Series.study.has(study_instance_uid=study_uid))
                ).all()
            return bool(states) and SeriesState.RECEIVING not in states

        wait_for(receiving, timeout=20, interval=0.2, what=f"study {study_uid} complete")


@pytest.fixture
def node(tmp_path: Path, machine_redis_url: str, database_url: str) -> Iterator[Node]:
    """Over SQLite, then PostgreSQL (``database_url``)."""
    release: list[SeriesRelease] = []
    with running_scp(
        tmp_path / "node",
        on_association=lambda record: release[0](record),
        completion_grace_seconds=0.2,
        database_url=database_url,
    ) as scp:
        orthanc = start_orthanc(
            tmp_path / "orthanc", node_port=scp.settings.dicom_port, route=False
        )
        try:
            source = RetrieveSource(name="pacs", method="get", dicom=orthanc.destination)
            settings = scp.settings.model_copy(update={"retrieve_sources": [source]})
            registry = discover_packages()
            ledger = JobLedger(scp.sessions)
            queue = JobQueue(make_celery(machine_redis_url, 3600), ledger)
            scheduler = Scheduler(settings, scp.sessions, registry, queue, ledger)
            release.append(SeriesRelease(scp.sessions, scheduler.wake))
            book = WorkitemBook(scp.sessions)
            retriever = StudyRetriever(settings, scp.store, scp.on_association)

            def restarted() -> RequestRunner:
                return RequestRunner(settings, scp.sessions, book, retriever, registry, queue)

            runner = restarted()
            ct = make_ct_series(
                np.random.default_rng(3).normal(-600, 150, (4, 32, 32)).astype(np.float32),
                patient_id="REQUEST1",
            )
            orthanc.store(write_series(ct, tmp_path / "ct"))
            mr = dcmread(get_testdata_file("MR_small.dcm", download=False))
            mr.StudyInstanceUID = generate_uid()
            mr.save_as(tmp_path / "mr.dcm")
            orthanc.store([tmp_path / "mr.dcm"])
            yield Node(scp, book, runner, restarted, scheduler, ledger, orthanc,
                       str(ct[0].StudyInstanceUID), str(mr.StudyInstanceUID))  # fmt: skip
        finally:
            orthanc.stop()


def test_a_request_is_claimed_retrieved_and_gets_its_jobs(node: Node) -> None:
    uid = node.book.create(analysis_request(node.ct_study, model=SEG_MODEL, priority="HIGH"))
    assert node.runner.run_once() is True  # claimed, and retrieved in the same pass
    row = node.workitem(uid)
    assert row.state is UpsState.IN_PROGRESS and row.transaction_uid
    assert row.progress_description == "waiting for 1 series of the study to be complete"
    with node.scp.sessions() as session:
        assert session.scalar(select(func.count(Instance.id))) == 4  # retrieved by C-GET
    assert node.jobs(uid) == []

    node.complete_series(node.ct_study)  # the scheduler routes them: the request's jobs
    jobs = node.jobs(uid)
    assert [(j.model_name, j.priority, j.state) for j in jobs] == [
        (SEG_MODEL, UpsPriority.HIGH, JobState.QUEUED)  # the requested model only
    ]
    assert node.runner.run_once() is False
    assert node.workitem(uid).progress_description == "analysing: 0 of 1 analyses done"

    # The analysis fails: nothing to reference, the workitem is CANCELED with why.
    node.ledger.fail(jobs[0].id, "the worker found no lung")
    node.runner.run_once()
    row = node.workitem(uid)
    assert row.state is UpsState.CANCELED
    assert "every analysis failed: ct-lung-nodule-seg: the worker found no lung" in (
        node.book.get(uid).ReasonForCancellation
    )

    # Asked again for the study it holds now: retrieved again (identical, nothing
    # re-opened), so the runner routes the held series itself, every model this time.
    again = node.book.create(analysis_request(node.ct_study, priority="LOW"))
    node.runner.run_once()
    jobs = node.jobs(again)
    assert sorted(j.model_name for j in jobs) == sorted(discover_packages().names)
    assert {j.priority for j in jobs} == {UpsPriority.LOW}
    assert node.workitem(again).state is UpsState.IN_PROGRESS

    # A cancel request while IN PROGRESS ends it at the runner's next step.
    node.book.request_cancel(again, reason="the radiologist read it already", requester="RIS")
    node.runner.run_once()
    row = node.workitem(again)
    assert row.state is UpsState.CANCELED
    assert "the radiologist read it already" in node.book.get(again).ReasonForCancellation


def test_requests_that_end_canceled(node: Node) -> None:
    # Canceled while SCHEDULED: never claimed, never retrieved.
    scheduled = node.book.create(analysis_request(node.ct_study))
    node.book.request_cancel(scheduled, reason="ordered by mistake", requester="RIS")
    assert node.runner.run_once() is False
    assert node.workitem(scheduled).state is UpsState.CANCELED
    with node.scp.sessions() as session:
        assert session.scalars(select(Series.id)).first() is None  # nothing retrieved

    unknown = node.book.create(analysis_request(generate_uid()))
    node.runner.run_once()
    reason = node.book.get(unknown).ReasonForCancellation
    assert node.workitem(unknown).state is UpsState.CANCELED
    assert reason.startswith("retrieval failed: C-GET from ORTHANC@127.0.0.1:"), reason
    assert "no instance of the study" in reason

    missing = node.book.create(analysis_request(node.ct_study, model="no-such-model"))
    node.runner.run_once()
    assert node.workitem(missing).state is UpsState.CANCELED
    assert "'no-such-model' is not installed" in node.book.get(missing).ReasonForCancellation

    mr = node.book.create(analysis_request(node.mr_study))
    node.runner.run_once()
    node.complete_series(node.mr_study)
    node.runner.run_once()
    reason = node.book.get(mr).ReasonForCancellation
    assert node.workitem(mr).state is UpsState.CANCELED
    assert reason.startswith("no model accepts the study: "), reason
    assert "modality" in reason.lower(), reason


def test_a_workitem_in_progress_is_taken_up_again_after_a_restart(node: Node) -> None:
    uid = node.book.create(analysis_request(node.ct_study))
    node.runner.run_once()  # claimed and retrieved; then the node stops
    claimed = node.workitem(uid).transaction_uid
    node.complete_series(node.ct_study)  # routed meanwhile: the request's jobs
    assert len(node.jobs(uid)) == 2

    again = node.restarted()  # knows nothing but what the database says
    assert again.run_once() is False
    row = node.workitem(uid)
    assert row.state is UpsState.IN_PROGRESS and row.transaction_uid == claimed
    assert row.progress_description == "analysing: 0 of 2 analyses done"
    for job in node.jobs(uid):
        node.ledger.fail(job.id, "stopped for the test")
    again.run_once()
    assert node.workitem(uid).state is UpsState.CANCELED
