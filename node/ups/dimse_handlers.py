"""The UPS DIMSE handlers: thin shells that call the workitem book and answer its statuses.

UPS Push (N-CREATE, N-ACTION Request Cancel, N-GET), Pull (C-FIND, N-GET, N-SET,
N-ACTION Change State), Watch (N-ACTION Subscribe, Unsubscribe, Suspend Global, N-GET,
C-FIND) and Query (C-FIND), as pynetdicom event handlers with their dependencies bound
(``handlers``). The association's admission (called AE title, calling AE title and
host allow-list, counts) is judged on ``EVT_REQUESTED``, before negotiation, by the
node's own ``Admission``.

Whoever claims a workitem over DIMSE is recorded as its performer by calling AE title.
A subscription names its Receiving AE (0074,1234); it must be one of
``AINODE_UPS_EVENT_RECEIVERS`` (else 0xC308), since events go to its address.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from pydicom import Dataset
from pynetdicom import evt
from pynetdicom.events import Event

from node.admission import Admission
from node.db.worklist import UpsState
from node.delivery.destinations import DicomAddress
from node.ups.attributes import TRANSACTION_UID
from node.ups.book import WorkitemBook
from node.ups.states import UpsError, UpsStatus

log = logging.getLogger(__name__)

# N-ACTION Action Type IDs, PS3.4 CC.2.
CHANGE_STATE, REQUEST_CANCEL, SUBSCRIBE, UNSUBSCRIBE, SUSPEND_GLOBAL = 1, 2, 3, 4, 5
PENDING = 0xFF00


def _status(code: int, comment: str = "") -> Dataset:
    """A status with its Error Comment (at most 64 characters, PS3.7 C.4)."""
    status = Dataset()
    status.Status = int(code)
    if comment and code != UpsStatus.SUCCESS:
        status.ErrorComment = comment[:64]
    return status


def _failure(error: UpsError) -> Dataset:
    log.info("UPS request refused: 0x%04X %s", error.status, error.message)
    return _status(error.status, error.message)


def _calling(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def handle_n_create(event: Event, book: WorkitemBook) -> tuple[Dataset, Dataset | None]:
    """N-CREATE (UPS Push): a new SCHEDULED workitem, origin REQUESTED."""
    uid = event.request.AffectedSOPInstanceUID
    try:
        uid = book.create(event.attribute_list, uid=str(uid) if uid else None)
        reply = book.get(uid)
    except UpsError as error:
        return _failure(error), None
    if event.request.AffectedSOPInstanceUID is None:
        reply.AffectedSOPInstanceUID = uid  # pynetdicom moves it into the response
    return _status(UpsStatus.SUCCESS), reply


def handle_n_get(event: Event, book: WorkitemBook) -> tuple[Dataset, Dataset | None]:
    """N-GET (Push, Pull, Watch): the attributes asked for (all when none)."""
    keys = event.request.AttributeIdentifierList or None
    if keys is not None and not isinstance(keys, list):
        keys = [keys]
    try:
        found = book.get(str(event.request.RequestedSOPInstanceUID), keys)
    except UpsError as error:
        return _failure(error), None
    return _status(UpsStatus.SUCCESS), found


def handle_n_set(event: Event, book: WorkitemBook) -> tuple[Dataset, Dataset | None]:
    """N-SET (Pull): the Transaction UID travels in the modification list."""
    changes = event.modification_list
    given = str(changes[TRANSACTION_UID].value or "") if TRANSACTION_UID in changes else None
    uid = str(event.request.RequestedSOPInstanceUID)
    try:
        book.set(uid, changes, given or None)
    except UpsError as error:
        return _failure(error), None
    return _status(UpsStatus.SUCCESS), None


def _receiving_ae(info: Dataset, receivers: Mapping[str, DicomAddress]) -> str:
    title = str(info.get("ReceivingAE") or "").strip()
    if not title:
        raise UpsError(UpsStatus.MISSING_ATTRIBUTE, "Receiving AE (0074,1234) is missing")
    if title not in receivers:
        raise UpsError(UpsStatus.RECEIVING_AE_UNKNOWN, f"Receiving AE {title} is unknown here")
    return title


def _action(event: Event, book: WorkitemBook, receivers: Mapping[str, DicomAddress]) -> UpsStatus:
    uid = str(event.request.RequestedSOPInstanceUID)
    info = event.action_information if event.request.ActionInformation is not None else Dataset()
    kind = event.action_type
    if kind == CHANGE_STATE:
        state = str(info.get("ProcedureStepState") or "")
        if state not in {s.value for s in UpsState}:
            raise UpsError(UpsStatus.INVALID_ATTRIBUTE_VALUE, f"no such state {state!r}")
        claim = str(info.get("TransactionUID") or "")
        return book.change_state(uid, UpsState(state), claim, performer=_calling(event))
    if kind == REQUEST_CANCEL:
        return book.request_cancel(uid, requester=_calling(event), request=info)
    if kind == SUBSCRIBE:
        title = _receiving_ae(info, receivers)
        lock = str(info.get("DeletionLock") or "").upper() == "TRUE"
        keys = Dataset()
        keys.update({e.tag: e for e in info if e.keyword not in ("ReceivingAE", "DeletionLock")})
        book.subscribe(title, uid, deletion_lock=lock, filter=keys if len(keys) else None)
        return UpsStatus.SUCCESS
    if kind == UNSUBSCRIBE:
        book.unsubscribe(_receiving_ae(info, receivers), uid)
        return UpsStatus.SUCCESS
    if kind == SUSPEND_GLOBAL:
        book.suspend_global(_receiving_ae(info, receivers))
        return UpsStatus.SUCCESS
    raise UpsError(UpsStatus.NO_SUCH_ACTION, f"no UPS action of type {kind}")


def handle_n_action(
    event: Event, book: WorkitemBook, receivers: Mapping[str, DicomAddress]
) -> tuple[Dataset, Dataset | None]:
    """N-ACTION: Change State (1), Request Cancel (2), Subscribe (3), Unsubscribe (4),
    Suspend Global Subscription (5)."""
    try:
        return _status(_action(event, book, receivers)), None
    except UpsError as error:
        return _failure(error), None


def handle_c_find(event: Event, book: WorkitemBook) -> Iterator[tuple[int | Dataset, Any]]:
    """C-FIND (Pull, Watch, Query): each match as a pending response."""
    try:
        matches = book.find(event.identifier)
    except UpsError as error:
        yield _failure(error), None
        return
    except ValueError as error:  # an identifier pydicom cannot read
        yield _status(UpsStatus.IDENTIFIER_DOES_NOT_MATCH, str(error)), None
        return
    for identifier in matches:
        if event.is_cancelled:
            yield 0xFE00, None
            return
        yield PENDING, identifier


class AssociationAdmission:
    """The node's ``Admission`` applied to the UPS AE's associations: judged when the
    A-ASSOCIATE-RQ arrives, counted until the connection closes."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self._admitted: dict[int, str] = {}  # id(association): calling AE title

    def on_requested(self, event: Event) -> None:
        primitive = event.assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        refusal = self.admission.admit(calling, called, event.assoc.requestor.address)
        if refusal is not None:
            event.assoc.acse.send_reject(*refusal.value)
            event.assoc.kill()  # as pynetdicom's own refusals: the A-ASSOCIATE-RJ goes first
            return
        self._admitted[id(event.assoc)] = calling

    def on_closed(self, event: Event) -> None:
        calling = self._admitted.pop(id(event.assoc), None)
        if calling is not None:
            self.admission.release(calling)


def handlers(
    book: WorkitemBook, receivers: Mapping[str, DicomAddress], admission: AssociationAdmission
) -> list[tuple[Any, ...]]:
    """The UPS AE's event handlers, each with its dependencies bound."""
    return [
        (evt.EVT_REQUESTED, admission.on_requested),
        (evt.EVT_CONN_CLOSE, admission.on_closed),
        (evt.EVT_N_CREATE, handle_n_create, [book]),
        (evt.EVT_N_GET, handle_n_get, [book]),
        (evt.EVT_N_SET, handle_n_set, [book]),
        (evt.EVT_N_ACTION, handle_n_action, [book, receivers]),
        (evt.EVT_C_FIND, handle_c_find, [book]),
    ]
