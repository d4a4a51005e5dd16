"""The workitem book on a real database (SQLite, then PostgreSQL): the UPS state machine
and its statuses (PS3.4 CC.1.1, CC.2), Transaction UIDs, C-FIND matching, the events
written for subscribers, and a routed job's own workitem following the job's ledger."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import Dataset
from sqlalchemy import select

from node.db.migrate import upgrade_to_head
from node.db.models import Job
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.db.worklist import UpsEvent, UpsPriority, UpsState, Workitem, WorkitemOrigin
from node.delivery.destinations import DicomDestination
from node.delivery.outbox import Delivered
from node.jobs.ledger import JobLedger, NewResult
from node.settings import Settings
from node.ups.attributes import FILTERED_GLOBAL_SUBSCRIPTION, GLOBAL_SUBSCRIPTION
from node.ups.book import NODE_PERFORMER, UpsError, UpsStatus, WorkitemBook
from tests.ups_workitems import SEG, performed, progress, routed_job, scheduled

CLAIM = "1.2.826.0.1.3680043.8.498.77"
LOST = timedelta(seconds=60)


@pytest.fixture
def sessions(database_url: str, tmp_path: Path) -> Iterator[SessionFactory]:
    engine = make_engine(Settings(data_dir=tmp_path, database_url=database_url))
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def book(sessions: SessionFactory) -> WorkitemBook:
    return WorkitemBook(sessions)


def refused(status: int, call, *args, **kwargs) -> str:  # noqa: ANN001
    with pytest.raises(UpsError) as caught:
        call(*args, **kwargs)
    assert caught.value.status == status, repr(caught.value)
    return caught.value.message


def events(sessions: SessionFactory, subscriber: str) -> list[tuple[int, str]]:
    """(event type, the state or the progress it reports) of each event, in order."""
    with sessions() as session:
        rows = session.scalars(
            select(UpsEvent).where(UpsEvent.subscriber == subscriber).order_by(UpsEvent.id)
        ).all()
    said = []
    for row in rows:
        info = Dataset.from_json(row.info)
        progress_items = info.get("ProcedureStepProgressInformationSequence") or [Dataset()]
        said.append(
            (row.event_type, str(info.get("ProcedureStepState") or
             progress_items[0].get("ProcedureStepProgressDescription") or
             info.get("ReasonForCancellation") or ""))
        )  # fmt: skip
    return said


def test_create_checks_what_the_standard_requires(book: WorkitemBook) -> None:
    uid = book.create(scheduled(model="ct-lung"), uid="1.2.3.4.5")
    assert uid == "1.2.3.4.5"
    created = book.get(uid)
    assert created.ProcedureStepState == "SCHEDULED"
    assert created.SOPClassUID == "1.2.840.10008.5.1.4.34.6.1"
    assert "TransactionUID" not in created
    refused(UpsStatus.DUPLICATE_SOP_INSTANCE, book.create, scheduled(), uid="1.2.3.4.5")
    in_progress = scheduled()
    in_progress.ProcedureStepState = "IN PROGRESS"
    refused(UpsStatus.CREATED_NOT_SCHEDULED, book.create, in_progress)
    unlabelled = scheduled()
    del unlabelled.ProcedureStepLabel
    refused(UpsStatus.MISSING_ATTRIBUTE, book.create, unlabelled)
    urgent = scheduled(priority="URGENT")
    refused(UpsStatus.INVALID_ATTRIBUTE_VALUE, book.create, urgent)
    with book.sessions() as session:
        row = session.scalars(select(Workitem).where(Workitem.sop_instance_uid == uid)).one()
    assert (row.origin, row.requested_model, row.study_instance_uid) == (
        WorkitemOrigin.REQUESTED, "ct-lung", "1.2.826.0.1.3680043.8.498.1",
    )  # fmt: skip
    assert book.get(uid, keys=[0x00741000, 0x00081195]).ProcedureStepState == "SCHEDULED"
    assert len(book.get(uid, keys=[0x00741000, 0x00081195])) == 1  # never the Transaction UID
    refused(UpsStatus.NO_SUCH_WORKITEM, book.get, "1.2.999")


def test_the_state_table_and_the_transaction_uid(book: WorkitemBook) -> None:
    uid = book.create(scheduled(study="1.2.5"))
    book.set(uid, progress(0, "waiting"), None)  # SCHEDULED: set without a Transaction UID
    refused(UpsStatus.NOT_IN_PROGRESS, book.change_state, uid, UpsState.COMPLETED, CLAIM)
    refused(UpsStatus.ONLY_SCHEDULED_BY_CREATE, book.change_state, uid, UpsState.SCHEDULED, CLAIM)
    refused(UpsStatus.WRONG_TRANSACTION_UID, book.change_state, uid, UpsState.IN_PROGRESS, "")
    assert book.change_state(uid, UpsState.IN_PROGRESS, CLAIM, performer="RIS") is UpsStatus.SUCCESS
    refused(UpsStatus.ALREADY_IN_PROGRESS, book.change_state, uid, UpsState.IN_PROGRESS, "1.9")
    refused(UpsStatus.WRONG_TRANSACTION_UID, book.set, uid, progress(50, "half"), "1.9")
    refused(UpsStatus.WRONG_TRANSACTION_UID, book.set, uid, progress(50, "half"), None)
    book.set(uid, progress(50, "half", transaction_uid=CLAIM), None)  # in the data set
    assert book.get(uid).ProcedureStepProgressInformationSequence[0].ProcedureStepProgress == 50
    refused(UpsStatus.WRONG_TRANSACTION_UID, book.change_state, uid, UpsState.COMPLETED, "1.9")
    message = refused(
        UpsStatus.FINAL_STATE_NOT_MET, book.change_state, uid, UpsState.COMPLETED, CLAIM
    )
    assert "Performed Procedure Sequence" in message
    changed = Dataset()
    changed.ProcedureStepState = "COMPLETED"
    refused(UpsStatus.INVALID_ATTRIBUTE_VALUE, book.set, uid, changed, CLAIM)
    book.set(uid, performed("1.2.5"), CLAIM)
    assert book.change_state(uid, UpsState.COMPLETED, CLAIM) is UpsStatus.SUCCESS
    assert book.get(uid).ProcedureStepState == "COMPLETED"
    assert book.change_state(uid, UpsState.COMPLETED, CLAIM) is UpsStatus.ALREADY_COMPLETED_WARNING
    refused(UpsStatus.MAY_NO_LONGER_BE_UPDATED, book.change_state, uid, UpsState.CANCELED, CLAIM)
    refused(UpsStatus.MAY_NO_LONGER_BE_UPDATED, book.set, uid, progress(99, "late"), CLAIM)
    refused(UpsStatus.ALREADY_COMPLETED, book.request_cancel, uid, "too late")
    assert all("TransactionUID" not in found for found in book.find(Dataset()))


def test_cancel_requests(book: WorkitemBook, sessions: SessionFactory) -> None:
    book.subscribe("WATCHER")
    waiting = book.create(scheduled(study="1.2.6"))
    assert book.request_cancel(waiting, "ordered twice", "RIS") is UpsStatus.SUCCESS
    assert book.get(waiting).ProcedureStepState == "CANCELED"
    assert book.get(waiting).ReasonForCancellation == "ordered twice"
    assert book.request_cancel(waiting, "again", "RIS") is UpsStatus.ALREADY_CANCELED
    assert events(sessions, "WATCHER") == [
        (1, "SCHEDULED"), (1, "IN PROGRESS"), (1, "CANCELED"),
    ]  # fmt: skip

    running = book.create(scheduled(study="1.2.7"))
    book.change_state(running, UpsState.IN_PROGRESS, CLAIM, performer="MODALITY")
    assert book.request_cancel(running, "patient left", "RIS") is UpsStatus.SUCCESS
    assert book.get(running).ProcedureStepState == "IN PROGRESS"  # the performer decides
    assert events(sessions, "WATCHER")[-1] == (2, "patient left")
    with sessions() as session:
        row = session.scalars(select(Workitem).where(Workitem.sop_instance_uid == running)).one()
    assert row.cancel_requested_at is not None and row.cancel_reason == "patient left"
    assert book.change_state(running, UpsState.CANCELED, CLAIM) is UpsStatus.SUCCESS
    canceled = book.get(running)
    assert canceled.ProcedureStepProgressInformationSequence[0].ProcedureStepCancellationDateTime

    book.unsubscribe("WATCHER")
    alone = book.create(scheduled(study="1.2.8"))
    book.change_state(alone, UpsState.IN_PROGRESS, CLAIM, performer="MODALITY")
    refused(UpsStatus.PERFORMER_CANNOT_BE_CONTACTED, book.request_cancel, alone, "nobody hears")


def test_matching(book: WorkitemBook) -> None:
    lung = book.create(scheduled("CT lung", "HIGH", "1.2.10", "Doe^Jane"))
    head = book.create(scheduled("CT head", "LOW", "1.2.11", "Roe^Richard"))
    book.change_state(head, UpsState.IN_PROGRESS, CLAIM)

    def found(**keys: object) -> list[str]:
        query = Dataset()
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        return [str(d.SOPInstanceUID) for d in book.find(query)]

    assert found() == [lung, head]
    assert found(ProcedureStepState="SCHEDULED") == [lung]
    assert found(PatientName="doe*") == [lung]  # PN: case-insensitive wildcard
    assert found(ProcedureStepLabel="CT ?ead") == [head]
    assert found(ScheduledProcedureStepPriority="LOW") == [head]
    assert found(ScheduledProcedureStepStartDateTime="20240101-20240102") == [lung, head]
    assert found(ScheduledProcedureStepStartDateTime="-20231231") == []
    assert found(SOPInstanceUID=[head, "1.2.999"]) == [head]
    item = Dataset()
    item.StudyInstanceUID = "1.2.11"
    assert found(InputInformationSequence=[item]) == [head]
    query = Dataset()
    query.PatientName = ""
    query.InputInformationSequence = [Dataset()]
    query.InputInformationSequence[0].StudyInstanceUID = ""
    answer = book.find(query)[0]
    assert answer.PatientName == "Doe^Jane" and answer.SOPInstanceUID == lung
    assert answer.InputInformationSequence[0].StudyInstanceUID == "1.2.10"
    assert "ProcedureStepLabel" not in answer  # only what was asked, and the UID
    assert len(book.find(Dataset(), limit=1, offset=1)) == 1


def test_subscriptions_and_their_events(book: WorkitemBook, sessions: SessionFactory) -> None:
    before = book.create(scheduled(study="1.2.20"))
    done = book.create(scheduled(study="1.2.21"))
    book.change_state(done, UpsState.IN_PROGRESS, CLAIM)
    book.request_cancel(done, "stop", "RIS")  # the node performs it: recorded, no event
    book.change_state(done, UpsState.CANCELED, CLAIM)

    book.subscribe("GLOBAL", GLOBAL_SUBSCRIPTION)  # a State Report of each one not final
    assert events(sessions, "GLOBAL") == [(1, "SCHEDULED")]
    high = Dataset()
    high.ScheduledProcedureStepPriority = "HIGH"
    book.subscribe("URGENT", FILTERED_GLOBAL_SUBSCRIPTION, filter=high)
    book.subscribe("ONE", before, deletion_lock=True)
    refused(UpsStatus.NO_SUCH_WORKITEM, book.subscribe, "ONE", "1.2.999")

    urgent = book.create(scheduled(priority="HIGH", study="1.2.22"))
    book.create(scheduled(priority="LOW", study="1.2.23"))
    assert [e[1] for e in events(sessions, "URGENT")] == ["SCHEDULED"]  # the HIGH one only
    assert len(events(sessions, "GLOBAL")) == 3
    assert events(sessions, "ONE") == [(1, "SCHEDULED")]

    book.suspend_global("GLOBAL")  # keeps the workitems there are, not new ones
    book.create(scheduled(study="1.2.24"))
    book.change_state(urgent, UpsState.IN_PROGRESS, CLAIM)
    assert events(sessions, "GLOBAL")[-1] == (1, "IN PROGRESS")
    assert len(events(sessions, "GLOBAL")) == 4

    book.unsubscribe("URGENT", FILTERED_GLOBAL_SUBSCRIPTION)
    book.set(urgent, progress(30, "a third"), CLAIM)
    assert events(sessions, "GLOBAL")[-1] == (3, "a third")
    assert events(sessions, "URGENT")[-1] == (1, "IN PROGRESS")  # no progress report since

    book.subscribe("web:RIS", urgent)
    book.change_state(urgent, UpsState.CANCELED, CLAIM)
    taken = book.take_pending("web:")
    assert [(e.subscriber, e.event_type) for e in taken] == [("web:RIS", 1), ("web:RIS", 1)]
    assert taken[-1].info.ProcedureStepState == "CANCELED"
    assert book.take_pending("web:") == []  # marked sent
    assert all(not e.subscriber.startswith("web:") for e in book.pending_events())


def test_two_performers_claim_at_once_and_one_wins(book: WorkitemBook) -> None:
    uid = book.create(scheduled(study="1.2.30"))
    outcomes: list[int] = []
    start = threading.Barrier(4)

    def claim(n: int) -> None:
        start.wait()
        try:
            book.change_state(uid, UpsState.IN_PROGRESS, f"{CLAIM}.{n}", performer=f"P{n}")
            outcomes.append(0)
        except UpsError as error:
            outcomes.append(error.status)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [0, UpsStatus.ALREADY_IN_PROGRESS, UpsStatus.ALREADY_IN_PROGRESS,
                                UpsStatus.ALREADY_IN_PROGRESS]  # fmt: skip


def test_a_routed_job_is_a_workitem_that_follows_it(
    sessions: SessionFactory, book: WorkitemBook, tmp_path: Path
) -> None:
    book.subscribe("WATCHER")
    job_id = routed_job(sessions, tmp_path)
    ledger = JobLedger(sessions)
    with sessions() as session:
        job = session.get_one(Job, job_id)
        row = job.workitem
        assert row is not None and row.origin is WorkitemOrigin.NODE
        assert (row.state, row.priority, row.requested_model) == (
            UpsState.SCHEDULED, UpsPriority.MEDIUM, "ct-model",
        )  # fmt: skip
        uid = row.sop_instance_uid
    inputs = book.get(uid).InputInformationSequence
    assert [len(i.ReferencedSOPSequence) for i in inputs] == [2]
    assert inputs[0].SeriesInstanceUID == "1.2.3.1"

    assert ledger.start(job_id, lost_after=LOST) == 1
    with sessions() as session:
        row = session.scalars(select(Workitem).where(Workitem.sop_instance_uid == uid)).one()
        assert (row.state, row.performer) == (UpsState.IN_PROGRESS, NODE_PERFORMER)
        assert row.transaction_uid  # the node's own claim
    archive = DicomDestination(name="pacs", dicom="PACS@127.0.0.1:4242", kinds=["SEG", "SR"])
    result = NewResult("SEG", SEG, "1.2.3.9.1", "1/seg.dcm", series_instance_uid="1.2.3.9")
    ledger.analyzed(job_id, {}, [result], [archive])
    assert book.get(uid).ProcedureStepProgressInformationSequence[0].ProcedureStepProgress == 90
    ledger.settle(job_id, lambda _session, _job: Delivered())

    done = book.get(uid)
    assert done.ProcedureStepState == "COMPLETED"
    output = done.UnifiedProcedureStepPerformedProcedureSequence[0].OutputInformationSequence[0]
    assert (output.StudyInstanceUID, output.SeriesInstanceUID) == ("1.2.3", "1.2.3.9")
    assert output.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.9.1"
    assert output.DICOMRetrievalSequence[0].RetrieveAETitle == "PACS"
    assert [e for e in events(sessions, "WATCHER") if e[0] == 1] == [
        (1, "SCHEDULED"), (1, "IN PROGRESS"), (1, "COMPLETED"),
    ]  # fmt: skip

    # Re-analysed: the finished workitem stays COMPLETED; the job gets a new one.
    ledger.reset_for_retry(job_id)
    with sessions() as session:
        again = session.get_one(Job, job_id).workitem
        assert again is not None and again.sop_instance_uid != uid
        assert again.state is UpsState.SCHEDULED
    ledger.start(job_id, lost_after=LOST)
    ledger.fail(job_id, "the series has one slice")
    with sessions() as session:
        failed = session.get_one(Job, job_id).workitem
        assert failed is not None
        assert (failed.state, failed.cancel_reason) == (
            UpsState.CANCELED, "the series has one slice",
        )  # fmt: skip


def test_a_stat_job_without_a_workitem_gets_one_that_stays_stat(
    sessions: SessionFactory, book: WorkitemBook, tmp_path: Path
) -> None:
    job_id = routed_job(sessions, tmp_path, study="1.2.50")
    with transaction(sessions) as session:  # a job from before workitems, made urgent
        job = session.get_one(Job, job_id)
        job.workitem, job.priority = None, UpsPriority.STAT
    JobLedger(sessions).start(job_id, lost_after=LOST)
    with sessions() as session:
        row = session.get_one(Job, job_id).workitem
        assert row is not None and (row.state, row.priority) == (
            UpsState.IN_PROGRESS, UpsPriority.STAT,
        )  # fmt: skip
        uid = row.sop_instance_uid
    assert book.get(uid).ScheduledProcedureStepPriority == "HIGH"  # STAT is no DICOM value
