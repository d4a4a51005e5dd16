"""Storage commitment against a real Orthanc, the node being the requester.

The node C-STOREs into Orthanc, asks it to commit with an N-ACTION, and Orthanc answers
with an N-EVENT-REPORT on a new association to the node, which it knows from its
``DicomModalities``. A small AE stands in for the node's Storage SCP, accepting only
what :func:`node.delivery.commitment.accept_reports` adds and answering through
:func:`node.delivery.commitment.event_report_handler`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage

from node.delivery.commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
    CommitmentEvent,
    CommitmentFailureReason,
    CommitmentReport,
    EventReportStatus,
    accept_reports,
    event_report_handler,
    failure_reasons,
    new_transaction_uid,
    request_commitment,
)
from node.delivery.cstore import store_files
from node.delivery.destinations import DicomAddress
from node.delivery.transports import DeliveryError, Outgoing
from node.uids import derive_uid
from tests.factories import make_ct_series, write_series
from tests.orthanc import Orthanc, free_port, start_orthanc

NODE_AET = "AINODE"  # what start_orthanc declares the node as, and what the routing skips
REPORT_WAIT = 30.0


class ReportInbox:
    """The node's side of the report: what its handler recorded and answered."""

    def __init__(self) -> None:
        self.port = free_port()
        self.reports: queue.Queue[CommitmentReport] = queue.Queue()
        self.answers: queue.Queue[int] = queue.Queue()
        self.refuse = False
        self._handler = event_report_handler(self._record)

    def _record(self, report: CommitmentReport) -> None:
        if self.refuse:
            raise RuntimeError("the node's database is down")
        self.reports.put(report)

    def answer(self, event: Event) -> tuple[int, Dataset | None]:
        status, reply = self._handler(event)
        self.answers.put(status)
        return status, reply


@pytest.fixture
def inbox() -> Iterator[ReportInbox]:
    box = ReportInbox()
    ae = AE(ae_title=NODE_AET)
    accept_reports(ae)
    server = ae.start_server(
        ("127.0.0.1", box.port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, box.answer)],
    )
    yield box
    server.shutdown()


@pytest.fixture
def archive(tmp_path: Path, inbox: ReportInbox) -> Iterator[Orthanc]:
    """Orthanc with the node (the inbox's port) declared as modality AINODE."""
    peer = start_orthanc(tmp_path / "orthanc", node_port=inbox.port)
    yield peer
    peer.stop()


def stored_instances(archive: Orthanc, directory: Path, slices: int = 2) -> list[tuple[str, str]]:
    """C-STORE a small CT series into ``archive`` as the node; its (class, instance) UIDs."""
    hu = np.full((slices, 16, 16), -1000.0)
    datasets = make_ct_series(hu)
    paths = write_series(datasets, directory)
    outgoing = [
        Outgoing(p, CTImageStorage, ds.SOPInstanceUID)
        for p, ds in zip(paths, datasets, strict=True)
    ]
    store_files(DicomAddress.parse(archive.destination), NODE_AET, outgoing)
    return [(CTImageStorage, ds.SOPInstanceUID) for ds in datasets]


def next_report(inbox: ReportInbox, archive: Orthanc) -> CommitmentReport:
    try:
        return inbox.reports.get(timeout=REPORT_WAIT)
    except queue.Empty:
        pytest.fail(f"no storage commitment report within {REPORT_WAIT} s:\n{archive.log_tail()}")


def orthanc_job(archive: Orthanc, job_type: str) -> dict[str, object]:
    """The first job of ``job_type`` once it has finished, waiting for it if needed."""
    deadline = time.monotonic() + REPORT_WAIT
    while time.monotonic() < deadline:
        jobs = archive.get("/jobs?expand")
        for job in jobs:  # type: ignore[union-attr]
            if job["Type"] == job_type and job["State"] in ("Success", "Failure"):
                return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    pytest.fail(f"Orthanc finished no {job_type} job within {REPORT_WAIT} s")


def test_orthanc_commits_what_the_node_stored(
    tmp_path: Path, inbox: ReportInbox, archive: Orthanc
) -> None:
    references = stored_instances(archive, tmp_path / "ct")
    transaction = new_transaction_uid()
    same_association = request_commitment(
        DicomAddress.parse(archive.destination), NODE_AET, references, transaction, linger=1
    )
    # Orthanc never answers on the requesting association: the report comes separately.
    assert same_association is None
    report = next_report(inbox, archive)
    assert report.transaction_uid == transaction
    assert sorted(report.committed) == sorted(uid for _, uid in references)
    assert report.failed == []
    assert report.complete
    assert inbox.answers.get(timeout=5) == EventReportStatus.SUCCESS


def test_an_instance_orthanc_does_not_hold_is_reported_failed(
    tmp_path: Path, inbox: ReportInbox, archive: Orthanc
) -> None:
    stored = stored_instances(archive, tmp_path / "ct", slices=1)
    absent = derive_uid("tests.commitment", "never stored")
    transaction = new_transaction_uid()
    request_commitment(
        DicomAddress.parse(archive.destination),
        NODE_AET,
        [*stored, (CTImageStorage, absent)],
        transaction,
    )
    report = next_report(inbox, archive)
    assert report.transaction_uid == transaction
    assert report.committed == [stored[0][1]]
    assert report.failed == [(absent, CommitmentFailureReason.NO_SUCH_OBJECT_INSTANCE)]
    assert not report.complete
    assert failure_reasons(report) == {absent: "0x0112 no such object instance"}


def test_a_report_the_node_cannot_record_is_answered_processing_failure(
    tmp_path: Path, inbox: ReportInbox, archive: Orthanc
) -> None:
    references = stored_instances(archive, tmp_path / "ct", slices=1)
    inbox.refuse = True
    request_commitment(
        DicomAddress.parse(archive.destination), NODE_AET, references, new_transaction_uid()
    )
    assert inbox.answers.get(timeout=REPORT_WAIT) == EventReportStatus.PROCESSING_FAILURE
    assert inbox.reports.empty()
    # Orthanc learns the report was not taken: its commitment job fails, naming the node.
    job = orthanc_job(archive, "StorageCommitmentScp")
    assert job["State"] == "Failure"
    assert "cannot be handled by remote AET: AINODE" in str(job["ErrorDetails"])


def test_an_archive_that_does_not_know_the_node_refuses_the_request(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    references = stored_instances(orthanc, tmp_path / "ct", slices=1)
    with pytest.raises(DeliveryError, match="did not answer the storage commitment request"):
        request_commitment(
            DicomAddress.parse(orthanc.destination),
            NODE_AET,
            references,
            new_transaction_uid(),
        )


def test_an_unreachable_archive_raises_delivery_error() -> None:
    nobody = DicomAddress(ae_title="ORTHANC", host="127.0.0.1", port=free_port())
    with pytest.raises(DeliveryError, match="not established"):
        request_commitment(
            nobody, NODE_AET, [(CTImageStorage, derive_uid("tests.commitment", "x"))],
            new_transaction_uid(), timeout=5,
        )  # fmt: skip


class SameAssociationArchive:
    """A pynetdicom archive that reports on the requesting association, as PS3.4 J.3.3
    allows and Orthanc never does: as soon as its N-ACTION response is on the wire."""

    def __init__(self) -> None:
        self.port = free_port()
        self._requests: dict[Association, Dataset] = {}
        self._answered: set[Association] = set()

    def on_action(self, event: Event) -> tuple[int, None]:
        self._requests[event.assoc] = event.action_information
        return 0x0000, None

    def on_dimse_sent(self, event: Event) -> None:
        if isinstance(event.message, N_ACTION_RSP):
            self._answered.add(event.assoc)

    def on_pdu_sent(self, event: Event) -> None:
        # EVT_DIMSE_SENT fires before the response is queued; the first P-DATA sent after
        # it is the response itself, so only then may the report follow.
        if isinstance(event.pdu, P_DATA_TF) and event.assoc in self._answered:
            self._answered.discard(event.assoc)
            request = self._requests.pop(event.assoc)
            # Not on this (the DUL's) thread: it must go on to receive the report's answer.
            threading.Thread(target=self._report, args=(event.assoc, request)).start()

    @staticmethod
    def _report(assoc: Association, request: Dataset) -> None:
        info = Dataset()
        info.TransactionUID = request.TransactionUID
        info.ReferencedSOPSequence = request.ReferencedSOPSequence
        assoc.send_n_event_report(
            info,
            CommitmentEvent.SUCCESSFUL,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
        )

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_N_ACTION, self.on_action),
            (evt.EVT_DIMSE_SENT, self.on_dimse_sent),
            (evt.EVT_PDU_SENT, self.on_pdu_sent),
        ]


def test_a_report_on_the_requesting_association_is_returned() -> None:
    archive = SameAssociationArchive()
    ae = AE(ae_title="ARCHIVE")
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL)
    server = ae.start_server(
        ("127.0.0.1", archive.port),
        block=False,
        evt_handlers=archive.handlers(),
    )
    try:
        uid = derive_uid("tests.commitment", "same association")
        transaction = new_transaction_uid()
        report = request_commitment(
            DicomAddress(ae_title="ARCHIVE", host="127.0.0.1", port=archive.port),
            NODE_AET,
            [(CTImageStorage, uid)],
            transaction,
            linger=REPORT_WAIT,
        )
    finally:
        server.shutdown()
    assert report == CommitmentReport(transaction, committed=[uid], failed=[])
