"""The UPS DIMSE service over real associations: pynetdicom as the RIS (UPS Push, Pull,
Watch, Query SCU) and as the subscriber's event SCP, against the node's UPS SCP on a
free port, over SQLite and PostgreSQL."""

from __future__ import annotations

import queue
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from node.db.migrate import upgrade_to_head
from node.db.models import Job
from node.db.session import SessionFactory, make_engine, make_session_factory
from node.delivery.destinations import DicomDestination
from node.delivery.outbox import Delivered
from node.jobs.ledger import JobLedger, NewResult
from node.settings import Settings
from node.ups.attributes import (
    GLOBAL_SUBSCRIPTION,
    UPS_EVENT,
    UPS_PULL,
    UPS_PUSH,
    UPS_QUERY,
    UPS_WATCH,
)
from node.ups.service import UpsService
from tests.node_process import wait_for
from tests.orthanc import free_port
from tests.pki import make_pki
from tests.ups_workitems import SEG, performed, progress, routed_job, scheduled

CLAIM = "1.2.826.0.1.3680043.8.498.99"


@dataclass
class Received:
    event_type: int
    workitem: str
    info: Dataset


class EventReceiver:
    """A subscriber's UPS Event SCP: pynetdicom, answering every report with success."""

    def __init__(self, port: int, ae_title: str = "WATCHER") -> None:
        self.port = port
        self.ae_title = ae_title
        self.reports: queue.Queue[Received] = queue.Queue()
        self._server = None

    def _on_report(self, event: Event) -> tuple[int, None]:
        uid = str(event.request.AffectedSOPInstanceUID)
        self.reports.put(Received(int(event.event_type or 0), uid, event.event_information))
        return 0x0000, None

    def start(self) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(UPS_EVENT)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )  # fmt: skip

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def next(self, timeout: float = 15.0) -> Received:
        return self.reports.get(timeout=timeout)


@dataclass
class Provider:
    service: UpsService
    sessions: SessionFactory
    port: int
    receiver: EventReceiver


@pytest.fixture
def provider(database_url: str, tmp_path: Path) -> Iterator[Provider]:
    receiver = EventReceiver(free_port())
    settings = Settings(
        data_dir=tmp_path, database_url=database_url, dicom_bind="127.0.0.1",
        ups_port=free_port(), ups_event_receivers=f"WATCHER@127.0.0.1:{receiver.port}",
        ups_event_retry_seconds=0.2, ups_event_poll_seconds=1.0,
        allowed_calling_aets=["RIS@127.0.0.1", "PERFORMER", "WATCHER"],
    )  # fmt: skip
    engine = make_engine(settings)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    service = UpsService(settings, sessions)
    service.start()
    try:
        yield Provider(service, sessions, settings.ups_port, receiver)
    finally:
        service.stop()
        receiver.stop()
        engine.dispose()


def associate(provider: Provider, calling: str = "RIS") -> Association:
    ae = AE(ae_title=calling)
    for uid in (UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_QUERY):
        ae.add_requested_context(uid)
    return ae.associate("127.0.0.1", provider.port, ae_title="AINODE")


@pytest.fixture
def ris(provider: Provider) -> Iterator[Association]:
    assoc = associate(provider)
    assert assoc.is_established
    yield assoc
    assoc.release()


def action(assoc: Association, uid: str, kind: int, **info: str) -> int:
    data = Dataset()
    for keyword, value in info.items():
        setattr(data, keyword, value)
    # No information at all: none sent (pynetdicom would announce an empty data set).
    status, _reply = assoc.send_n_action(data if info else None, kind, UPS_PUSH, uid)
    return int(status.Status)


def n_set(assoc: Association, uid: str, changes: Dataset) -> Dataset:
    status, _ = assoc.send_n_set(changes, UPS_PUSH, uid)
    return status


def find(assoc: Association, **keys: str) -> list[Dataset]:
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    answers = []
    for status, identifier in assoc.send_c_find(query, UPS_QUERY):
        assert status.Status in (0xFF00, 0xFF01, 0x0000), status
        if identifier is not None and status.Status != 0x0000:
            answers.append(identifier)
    return answers


def test_push_pull_and_watch_over_dimse(provider: Provider, ris: Association) -> None:
    provider.receiver.start()
    assert action(ris, GLOBAL_SUBSCRIPTION, 3, ReceivingAE="WATCHER", DeletionLock="FALSE") == 0

    status, created = ris.send_n_create(scheduled(study="1.2.40"), UPS_PUSH, "1.2.40.100")
    assert status.Status == 0x0000 and created.ProcedureStepState == "SCHEDULED"
    listed = find(ris, ProcedureStepState="SCHEDULED", PatientName="DOE*", ProcedureStepLabel="")
    assert [(d.SOPInstanceUID, d.ProcedureStepLabel) for d in listed] == [
        ("1.2.40.100", "CT lung nodules"),
    ]  # fmt: skip
    status, got = ris.send_n_get([0x00741000, 0x00741200], UPS_PUSH, "1.2.40.100")
    assert (status.Status, got.ProcedureStepState, got.ScheduledProcedureStepPriority) == (
        0x0000, "SCHEDULED", "MEDIUM",
    )  # fmt: skip

    assert action(ris, "1.2.40.100", 1, ProcedureStepState="IN PROGRESS", TransactionUID=CLAIM) == 0
    wrong = n_set(ris, "1.2.40.100", progress(10, "stolen", transaction_uid="1.2.40.666"))
    assert wrong.Status == 0xC301 and "Transaction UID" in wrong.ErrorComment
    assert n_set(ris, "1.2.40.100", progress(60, "segmenting", CLAIM)).Status == 0x0000
    early = action(ris, "1.2.40.100", 1, ProcedureStepState="COMPLETED", TransactionUID=CLAIM)
    assert early == 0xC304  # no performed procedure yet
    assert n_set(ris, "1.2.40.100", performed("1.2.40", CLAIM)).Status == 0x0000
    assert action(ris, "1.2.40.100", 1, ProcedureStepState="COMPLETED", TransactionUID=CLAIM) == 0
    again = action(ris, "1.2.40.100", 1, ProcedureStepState="COMPLETED", TransactionUID=CLAIM)
    assert again == 0xB306

    reports = [provider.receiver.next() for _ in range(4)]
    assert {r.workitem for r in reports} == {"1.2.40.100"}
    said = [
        (r.event_type, str(r.info.get("ProcedureStepState") or
         r.info.ProcedureStepProgressInformationSequence[0].ProcedureStepProgressDescription))
        for r in reports
    ]  # fmt: skip
    assert said == [(1, "SCHEDULED"), (1, "IN PROGRESS"), (3, "segmenting"), (1, "COMPLETED")]
    status, got = ris.send_n_get([], UPS_PUSH, "1.2.40.100")
    assert got.ProcedureStepState == "COMPLETED" and "TransactionUID" not in got


def test_cancel_requests_over_dimse(provider: Provider, ris: Association) -> None:
    provider.receiver.start()
    for uid in ("1.2.41.1", "1.2.41.2"):
        workitem = scheduled(study=uid, patient="Müller^Jürgen")
        workitem.SpecificCharacterSet = "ISO_IR 192"
        assert ris.send_n_create(workitem, UPS_PUSH, uid)[0].Status == 0x0000
    assert [str(d.PatientName) for d in find(ris, PatientName="MÜLLER*")] == ["Müller^Jürgen"] * 2
    assert action(ris, "1.2.41.1", 2, ReasonForCancellation="ordered twice") == 0x0000
    assert ris.send_n_get([0x00741000], UPS_PUSH, "1.2.41.1")[1].ProcedureStepState == "CANCELED"
    assert action(ris, "1.2.41.1", 2) == 0xB304  # already canceled: a warning

    performer = associate(provider, "PERFORMER")
    assert performer.is_established
    claim = action(performer, "1.2.41.2", 1, ProcedureStepState="IN PROGRESS", TransactionUID=CLAIM)
    assert claim == 0x0000
    # Nobody is subscribed to tell the performer: refused, as CC.2.2.3 allows.
    assert action(ris, "1.2.41.2", 2, ReasonForCancellation="patient left") == 0xC312
    subscribed = action(ris, "1.2.41.2", 3, ReceivingAE="WATCHER", DeletionLock="TRUE")
    assert subscribed == 0x0000
    assert provider.receiver.next().info.ProcedureStepState == "IN PROGRESS"  # on subscribing
    assert action(ris, "1.2.41.2", 2, ReasonForCancellation="patient left") == 0x0000
    told = provider.receiver.next()
    assert (told.event_type, told.workitem, told.info.ReasonForCancellation) == (
        2, "1.2.41.2", "patient left",
    )  # fmt: skip
    assert told.info.RequestingAE == "RIS"
    canceled = action(performer, "1.2.41.2", 1, ProcedureStepState="CANCELED", TransactionUID=CLAIM)
    assert canceled == 0x0000
    assert provider.receiver.next().info.ProcedureStepState == "CANCELED"
    performer.release()


def test_what_is_refused(provider: Provider, ris: Association) -> None:
    assert action(ris, GLOBAL_SUBSCRIPTION, 3, ReceivingAE="ELSEWHERE", DeletionLock="FALSE") == (
        0xC308
    )  # fmt: skip
    assert ris.send_n_get([], UPS_PUSH, "1.2.42.404")[0].Status == 0xC307
    not_scheduled = scheduled(study="1.2.42")
    not_scheduled.ProcedureStepState = "COMPLETED"
    assert ris.send_n_create(not_scheduled, UPS_PUSH, "1.2.42.1")[0].Status == 0xC309
    assert ris.send_n_create(scheduled(study="1.2.42"), UPS_PUSH, "1.2.42.2")[0].Status == 0
    assert ris.send_n_create(scheduled(study="1.2.42"), UPS_PUSH, "1.2.42.2")[0].Status == 0x0111
    assert action(ris, "1.2.42.2", 1, ProcedureStepState="SCHEDULED", TransactionUID=CLAIM) == (
        0xC303
    )  # fmt: skip
    assert action(ris, "1.2.42.2", 9) == 0x0123  # no such action
    stranger = associate(provider, "STRANGER")  # not on the allow-list
    assert stranger.is_rejected
    assert associate(provider, "PERFORMER").is_established


def test_events_wait_for_a_subscriber_that_is_down(provider: Provider, ris: Association) -> None:
    assert action(ris, GLOBAL_SUBSCRIPTION, 3, ReceivingAE="WATCHER", DeletionLock="FALSE") == 0
    assert ris.send_n_create(scheduled(study="1.2.43"), UPS_PUSH, "1.2.43.1")[0].Status == 0
    with pytest.raises(queue.Empty):
        provider.receiver.next(timeout=0.5)  # nobody listens yet: kept, retried
    pending = provider.service.book.pending_events("WATCHER")
    assert [e.workitem_uid for e in pending] == ["1.2.43.1"]
    provider.receiver.start()
    report = provider.receiver.next()
    assert (report.event_type, report.workitem) == (1, "1.2.43.1")
    wait_for(lambda: not provider.service.book.pending_events("WATCHER"), 10, 0.1, "sent marked")


def test_a_routed_job_is_found_and_completed_over_dimse(
    provider: Provider, ris: Association, tmp_path: Path
) -> None:
    provider.receiver.start()
    assert action(ris, GLOBAL_SUBSCRIPTION, 3, ReceivingAE="WATCHER", DeletionLock="FALSE") == 0
    job_id = routed_job(provider.sessions, tmp_path, study="1.2.44")
    found = find(ris, ProcedureStepState="", ProcedureStepLabel="ct-model*", PatientName="")
    assert [(d.ProcedureStepState, d.PatientName) for d in found] == [("SCHEDULED", "Roe^Richard")]
    uid = str(found[0].SOPInstanceUID)
    # Events the ledger writes in a worker process are found by the dispatcher's poll.
    first = provider.receiver.next()
    assert (first.workitem, first.info.ProcedureStepState) == (uid, "SCHEDULED")

    ledger = JobLedger(provider.sessions)
    assert ledger.start(job_id, timedelta(seconds=60)) == 1
    archive = DicomDestination(name="pacs", dicom="PACS@127.0.0.1:4242")
    seg = NewResult("SEG", SEG, "1.2.44.9.1", "1/seg.dcm", series_instance_uid="1.2.44.9")
    ledger.analyzed(job_id, {}, [seg], [archive])
    ledger.settle(job_id, lambda _session, _job: Delivered())

    done = find(ris, SOPInstanceUID=uid, ProcedureStepState="COMPLETED",
                UnifiedProcedureStepPerformedProcedureSequence="")  # fmt: skip
    assert len(done) == 1
    outputs = done[0].UnifiedProcedureStepPerformedProcedureSequence[0].OutputInformationSequence
    assert outputs[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.44.9.1"
    assert outputs[0].DICOMRetrievalSequence[0].RetrieveAETitle == "PACS"
    states = []
    while "COMPLETED" not in states:
        report = provider.receiver.next()
        states.append(str(report.info.get("ProcedureStepState") or ""))
    assert [s for s in states if s] == ["IN PROGRESS", "COMPLETED"]
    with provider.sessions() as session:
        assert session.get_one(Job, job_id).workitem.sop_instance_uid == uid  # type: ignore[union-attr]


def test_the_ups_scp_over_dicom_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    settings = Settings(
        data_dir=tmp_path, dicom_bind="127.0.0.1", ups_port=0, ups_tls_port=free_port(),
        dicom_tls_cert=pki.server_cert, dicom_tls_key=pki.server_key, dicom_tls_ca=pki.ca,
        dicom_tls_require_client_cert=True,
    )  # fmt: skip
    engine = make_engine(settings)
    upgrade_to_head(engine)
    service = UpsService(settings, make_session_factory(engine))
    service.start()
    try:
        assert service.listening

        def client(with_cert: bool) -> Association:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(cafile=pki.ca)
            if with_cert:
                context.load_cert_chain(pki.client_cert, pki.client_key)
            ae = AE(ae_title="RIS")
            ae.add_requested_context(UPS_PUSH)
            port = settings.ups_tls_port
            return ae.associate(
                "127.0.0.1", port, ae_title="AINODE", tls_args=(context, "localhost")
            )

        assoc = client(with_cert=True)
        assert assoc.is_established
        assert assoc.send_n_create(scheduled(study="1.2.45"), UPS_PUSH, "1.2.45.1")[0].Status == 0
        assoc.release()
        assert not client(with_cert=False).is_established  # the node asks for a certificate
    finally:
        service.stop()
        engine.dispose()
