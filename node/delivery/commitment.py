"""Storage Commitment Push Model (PS3.4 Annex J) as the requester: asking the archive to
take responsibility for what the node stored, and reading its answer.

A C-STORE success only says the archive received an object; a commitment says it keeps
it. The node sends an N-ACTION (Request Storage Commitment) naming the stored
instances under a fresh Transaction UID, and the archive answers later with an
N-EVENT-REPORT: Event Type 1 when every instance is committed, 2 when some failed,
each failure with a reason.

Where the answer arrives: PS3.4 J.3.3 lets the archive send the N-EVENT-REPORT on the
requesting association or on a new one. Orthanc (1.6.0 and later) always opens a new
association for it: its storage commitment job looks the requester's calling AE title
up in its ``DicomModalities`` (failing with "Unknown remote modality for storage
commitment SCP" when absent), then calls ``DicomAssociation::ReportStorageCommitment``,
which connects to that modality's host and port, proposes the Storage Commitment Push
Model with itself in the SCP role (SCP/SCU Role Selection), and sends the report there.
So the node's own Storage SCP must accept that context and role
(:func:`accept_reports`) and bind :func:`event_report_handler` to
``evt.EVT_N_EVENT_REPORT``. :func:`request_commitment` also collects a report sent back
on its own association, for archives that do that, but only while the association is
open: ``linger`` seconds after the N-ACTION response (0 by default, since Orthanc never
does).

This module owns the commitment messages and their parsing; who waits for which
transaction, and what the node does with a failure, is up to its caller (the
delivery pass asks, ``node.delivery.reports`` records the answers).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from node.delivery.destinations import DicomAddress
from node.delivery.transports import DeliveryError
from node.network import set_tcp_nodelay
from node.uids import InvalidUID, validate_uid

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
# The well-known SOP Instance every Push Model request and report is addressed to.
STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # N-ACTION Action Type ID (PS3.4 J.3.2)
REPORT_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

# (SOP Class UID, SOP Instance UID) of one stored object.
Reference = tuple[str, str]


class CommitmentEvent(IntEnum):
    """N-EVENT-REPORT Event Type IDs of the Push Model (PS3.4 J.3.3)."""

    SUCCESSFUL = 1
    FAILURES_EXIST = 2


class CommitmentFailureReason(IntEnum):
    """Failure Reason (0008,1197) values an archive may give per instance (PS3.3 C.14.1.1)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    DUPLICATE_TRANSACTION_UID = 0x0131
    RESOURCE_LIMITATION = 0x0213


class EventReportStatus(IntEnum):
    """Statuses the node answers an N-EVENT-REPORT with (PS3.7 10.1.1.1.8)."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    NO_SUCH_EVENT_TYPE = 0x0113
    INVALID_ARGUMENT_VALUE = 0x0115
    NO_SUCH_SOP_CLASS = 0x0118


class InvalidCommitmentReport(ValueError):
    """An N-EVENT-REPORT that is not a readable Storage Commitment result."""

    def __init__(self, message: str, status: EventReportStatus) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CommitmentReport:
    """The archive's answer to one commitment request.

    ``failed`` holds (SOP Instance UID, Failure Reason code); the code is kept as an
    int because archives may send reasons newer than :class:`CommitmentFailureReason`.
    """

    transaction_uid: str
    committed: list[str] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when the archive took responsibility for every instance asked about."""
        return not self.failed


def new_transaction_uid() -> str:
    """A fresh Transaction UID under the UUID root (2.25).

    Random, not derived: PS3.4 J.3.3 forbids reusing a Transaction UID once its report
    has been sent, so asking again about the same instances needs a new one.
    """
    return f"2.25.{uuid.uuid4().int}"


def commitment_request(transaction_uid: str, references: list[Reference]) -> Dataset:
    """The N-ACTION Action Information: Transaction UID and the Referenced SOP Sequence."""
    if not references:
        raise ValueError("a storage commitment request must name at least one instance")
    ds = Dataset()
    ds.TransactionUID = validate_uid(transaction_uid, "Transaction UID")
    items = []
    for sop_class_uid, sop_instance_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID = validate_uid(sop_class_uid, "Referenced SOP Class UID")
        item.ReferencedSOPInstanceUID = validate_uid(
            sop_instance_uid, "Referenced SOP Instance UID"
        )
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def report_contexts() -> list[PresentationContext]:
    """What a Storage SCP must accept for an archive to deliver reports to the node.

    The archive opens the association and asks for the SCP role of the Storage
    Commitment Push Model (it is the commitment SCP even though it initiates), so the
    context accepts a requestor proposing that role and refuses one proposing SCU:
    nobody may ask this node for commitment. Peers that skip role negotiation still get
    the context with default roles, and their reports are served all the same.
    """
    context = build_context(STORAGE_COMMITMENT_PUSH_MODEL, REPORT_TRANSFER_SYNTAXES)
    context.scu_role = False
    context.scp_role = True
    return [context]


def accept_reports(ae: AE) -> None:
    """Add :func:`report_contexts` to ``ae``'s supported contexts."""
    for context in report_contexts():
        ae.add_supported_context(
            context.abstract_syntax,
            context.transfer_syntax,
            scu_role=context.scu_role,
            scp_role=context.scp_role,
        )


def _uid_of(item: Dataset, keyword: str, what: str) -> str:
    try:
        return validate_uid(str(item.get(keyword, "") or ""), what)
    except InvalidUID as exc:
        raise InvalidCommitmentReport(str(exc), EventReportStatus.INVALID_ARGUMENT_VALUE) from exc


def _failure_reason(item: Dataset) -> int:
    reason = item.get("FailureReason")
    if reason is None:
        # Required in every Failed SOP Sequence item (PS3.4 Table J.3-2); without it the
        # failure still stands, so count it as the archive's own processing failure.
        return int(CommitmentFailureReason.PROCESSING_FAILURE)
    return int(reason)


def parse_report(event_type: int | None, info: Dataset) -> CommitmentReport:
    """A :class:`CommitmentReport` from an N-EVENT-REPORT's Event Type ID and Information.

    Raises :class:`InvalidCommitmentReport`, carrying the status to answer with.
    """
    if event_type not in (CommitmentEvent.SUCCESSFUL, CommitmentEvent.FAILURES_EXIST):
        raise InvalidCommitmentReport(
            f"event type {event_type} is not a storage commitment result",
            EventReportStatus.NO_SUCH_EVENT_TYPE,
        )
    transaction_uid = _uid_of(info, "TransactionUID", "Transaction UID")
    committed = [
        _uid_of(item, "ReferencedSOPInstanceUID", "Referenced SOP Instance UID")
        for item in info.get("ReferencedSOPSequence", [])
    ]
    failed = [
        (
            _uid_of(item, "ReferencedSOPInstanceUID", "Failed SOP Instance UID"),
            _failure_reason(item),
        )
        for item in info.get("FailedSOPSequence", [])
    ]
    if event_type == CommitmentEvent.FAILURES_EXIST and not failed:
        raise InvalidCommitmentReport(
            "event type 2 (failures exist) without a Failed SOP Sequence",
            EventReportStatus.INVALID_ARGUMENT_VALUE,
        )
    return CommitmentReport(transaction_uid, committed, failed)


def parse_event_report(
    sop_class: str, event_type: int | None, read_info: Callable[[], Dataset]
) -> CommitmentReport:
    """A :class:`CommitmentReport` from an N-EVENT-REPORT's Affected SOP Class UID, Event
    Type ID and Event Information (read through ``read_info``, which may raise).

    Raises :class:`InvalidCommitmentReport` for another SOP class, another event type,
    or Event Information that cannot be decoded or lacks its UIDs.
    """
    if sop_class != STORAGE_COMMITMENT_PUSH_MODEL:
        raise InvalidCommitmentReport(
            f"N-EVENT-REPORT for SOP class {sop_class or '(none)'}, not storage commitment",
            EventReportStatus.NO_SUCH_SOP_CLASS,
        )
    try:
        info = read_info()
        # pydicom decodes lazily: touch every element now so a broken data set fails here.
        info.walk(lambda _ds, _elem: None)
    except Exception as exc:  # noqa: BLE001 - any decoding error means the same to the sender
        raise InvalidCommitmentReport(
            f"undecodable Event Information: {exc}", EventReportStatus.INVALID_ARGUMENT_VALUE
        ) from exc
    return parse_report(event_type, info)


ReportCallback = Callable[[CommitmentReport], None]
EventReportHandler = Callable[[Event], tuple[int, Dataset | None]]


def answer_report(
    on_report: ReportCallback,
    peer: str,
    sop_class: str,
    event_type: int | None,
    read_info: Callable[[], Dataset],
) -> int:
    """The status to answer an N-EVENT-REPORT with, after passing its report on.

    Success once ``on_report`` has returned, so the archive only considers the report
    delivered after the node has recorded it; Processing Failure (logged) when
    ``on_report`` raises, which tells the archive to report again later if it can; and
    the status :class:`InvalidCommitmentReport` names for a report that cannot be read.
    """
    try:
        report = parse_event_report(sop_class, event_type, read_info)
    except InvalidCommitmentReport as exc:
        log.warning("refused a storage commitment report from %s: %s", peer, exc)
        return int(exc.status)
    try:
        on_report(report)
    except Exception:  # noqa: BLE001 - the archive gets a failure status instead
        log.exception(
            "could not record storage commitment report %s from %s", report.transaction_uid, peer
        )
        return int(EventReportStatus.PROCESSING_FAILURE)
    return int(EventReportStatus.SUCCESS)


def event_report_handler(on_report: ReportCallback) -> EventReportHandler:
    """A pynetdicom ``evt.EVT_N_EVENT_REPORT`` handler answering as :func:`answer_report`
    does (pynetdicom expects (status, Event Reply); the Push Model has no Event Reply)."""

    def handle_event_report(event: Event) -> tuple[int, Dataset | None]:
        status = answer_report(
            on_report,
            str(event.assoc.requestor.ae_title).strip(),
            str(getattr(event.request, "AffectedSOPClassUID", "") or ""),
            event.event_type,
            lambda: event.event_information,
        )
        return status, None

    return handle_event_report


class _SameAssociationReport:
    """Catches a report for one transaction sent back on the requesting association."""

    def __init__(self, transaction_uid: str) -> None:
        self.transaction_uid = transaction_uid
        self.report: CommitmentReport | None = None
        self.arrived = threading.Event()

    def keep(self, report: CommitmentReport) -> None:
        if report.transaction_uid != self.transaction_uid:
            raise ValueError(f"report for unknown transaction {report.transaction_uid}")
        self.report = report
        self.arrived.set()


def _action_failure(destination: DicomAddress, status: Dataset) -> str | None:
    """Why the N-ACTION failed, from its response status; None on Success."""
    code = int(getattr(status, "Status", -1)) if status else -1
    if code == -1:
        # Orthanc aborts here when the calling AE title is not in its DicomModalities.
        return (
            f"{destination} did not answer the storage commitment request (aborted or timed"
            " out; is the node declared to the archive under its calling AE title?)"
        )
    if code != 0:
        comment = str(getattr(status, "ErrorComment", "") or "")
        why = f"status 0x{code:04X} {comment}".rstrip()
        return f"{destination} refused the storage commitment request: {why}"
    return None


def request_commitment(
    destination: DicomAddress,
    calling_aet: str,
    references: list[Reference],
    transaction_uid: str,
    timeout: float = 30,
    linger: float = 0.0,
) -> CommitmentReport | None:
    """Ask ``destination`` to commit ``references`` (SOP Class UID, SOP Instance UID).

    Returns once the archive has accepted the request (N-ACTION Success). The report
    itself normally arrives later on a new association to the node's Storage SCP, as
    Orthanc always does it; then this returns None. A report the archive sends back on
    this association within ``linger`` seconds after accepting is returned instead.
    Raises DeliveryError when no association is established, the archive does not
    support the Push Model, does not answer, or answers with a failure status.
    """
    request = commitment_request(transaction_uid, references)
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL, REPORT_TRANSFER_SYNTAXES)
    same_association = _SameAssociationReport(transaction_uid)
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        evt_handlers=[
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_N_EVENT_REPORT, event_report_handler(same_association.keep)),
        ],
    )
    if not assoc.is_established:
        if assoc.rejected_contexts:
            raise DeliveryError(f"{destination} does not support storage commitment (Push Model)")
        raise DeliveryError(f"association with {destination} was not established")
    try:
        status, _reply = assoc.send_n_action(
            request,
            REQUEST_STORAGE_COMMITMENT,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
        )
        failure = _action_failure(destination, status)
        if failure:
            raise DeliveryError(failure)
        if linger > 0:
            same_association.arrived.wait(linger)
    finally:
        if assoc.is_established:
            assoc.release()
    return same_association.report


def failure_reasons(report: CommitmentReport) -> dict[str, str]:
    """The report's failed instances, each with its reason in words (for the outbox)."""
    reasons = {}
    for uid, code in report.failed:
        try:
            words = CommitmentFailureReason(code).name.lower().replace("_", " ")
        except ValueError:
            words = "unknown reason"
        reasons[uid] = f"0x{code:04X} {words}"
    return reasons
