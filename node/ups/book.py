"""The workitem book: the UPS provider's one entry for workitems (PS3.4 Annex CC as the
node provides it), the one writer of ``Workitem``, ``UpsSubscription`` and ``UpsEvent``
rows together with ``node.ups.rows`` (its session-level writes) and ``node.ups.watch``
(subscriptions and the events to send).

Every request of the UPS services (DIMSE in ``node.ups.dimse_handlers``, UPS-RS in ``node.web``,
the node's own jobs through ``node.ups.job_sync``) comes through a
:class:`WorkitemBook` method, which judges it against the state table
(``node.ups.states``), changes the row and writes one event row per subscriber in the
same transaction: no state change is announced that did not happen, none lost that
did. The dispatcher (``node.ups.event_dispatcher``) is woken once the transaction committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydicom import Dataset
from sqlalchemy import select

from node.db.declarative import utcnow
from node.db.session import SessionFactory, locking_transaction, transaction
from node.db.worklist import UpsState, Workitem, WorkitemOrigin
from node.ups import attributes as attrs
from node.ups.matching import answer, matches, values_of
from node.ups.rows import (
    NODE_PERFORMER,
    announce,
    change_in,
    create_in,
    dataset_of,
    locked,
    new_transaction_uid,
    set_in,
)
from node.ups.states import UpsError, UpsStatus
from node.ups.watch import PendingEvent, WatchBook

__all__ = ["NODE_PERFORMER", "PendingEvent", "UpsError", "UpsStatus", "WorkitemBook"]


class WorkitemBook(WatchBook):
    """Workitems, subscriptions and events, each request in its own transaction.

    ``on_commit`` (the event dispatcher's wake) is called after a transaction that
    wrote events committed.
    """

    def __init__(
        self, sessions: SessionFactory, on_commit: Callable[[], None] | None = None
    ) -> None:
        self.sessions = sessions
        self.on_commit = on_commit

    # UPS Push / Pull ------------------------------------------------------------------

    def create(
        self,
        dataset: Dataset,
        uid: str | None = None,
        origin: WorkitemOrigin = WorkitemOrigin.REQUESTED,
        provider: str = "",
    ) -> str:
        """N-CREATE: a new SCHEDULED workitem; its SOP Instance UID (made when None)."""
        uid = uid or str(dataset.get("SOPInstanceUID") or "") or new_transaction_uid()
        with transaction(self.sessions) as session:
            create_in(session, dataset, uid, origin, provider)
        self._woken()
        return uid

    def get(self, uid: str, keys: Sequence[int] | None = None) -> Dataset:
        """N-GET: the workitem's attributes (those of ``keys`` when given; the
        Transaction UID never)."""
        with self.sessions() as session:
            row = session.scalars(select(Workitem).where(Workitem.sop_instance_uid == uid)).first()
            if row is None:
                raise UpsError(UpsStatus.NO_SUCH_WORKITEM, f"no workitem {uid}")
            dataset = dataset_of(row)
        dataset.pop(attrs.TRANSACTION_UID, None)
        if not keys:
            return dataset
        chosen = Dataset()
        for tag in attrs.tags_of(keys):
            if tag in dataset and tag != attrs.TRANSACTION_UID:
                chosen[tag] = dataset[tag]
        return chosen

    def set(self, uid: str, changes: Dataset, transaction_uid: str | None) -> None:
        """N-SET: change attributes; an IN PROGRESS workitem needs its Transaction UID."""
        with locking_transaction(self.sessions) as session:
            set_in(session, locked(session, uid), changes, transaction_uid)
        self._woken()

    def change_state(
        self, uid: str, state: UpsState, transaction_uid: str, performer: str = NODE_PERFORMER
    ) -> UpsStatus:
        """N-ACTION Change UPS State (type 1); SUCCESS or the warning status when the
        workitem is already in that final state. ``performer``: who claims it (an AE
        title, or ``NODE_PERFORMER`` when the node performs it)."""
        with locking_transaction(self.sessions) as session:
            status = change_in(session, locked(session, uid), state, transaction_uid, performer)
        self._woken()
        return status

    def request_cancel(
        self, uid: str, reason: str = "", requester: str = "", request: Dataset | None = None
    ) -> UpsStatus:
        """N-ACTION Request UPS Cancel (type 2), per CC.2.2.3.

        SCHEDULED: canceled at once (IN PROGRESS, then CANCELED, each reported).
        IN PROGRESS: the request is recorded (``cancel_requested_at``) and a Cancel
        Requested event goes to the subscribers, the performer among them; refused
        (C312) when the performer is another system and nobody is subscribed to hear
        it. ``request``: the N-ACTION's information (reason, contact), if any.
        """
        request = request if request is not None else Dataset()
        if reason and "ReasonForCancellation" not in request:
            request.ReasonForCancellation = reason
        reason = str(request.get("ReasonForCancellation") or "")
        with locking_transaction(self.sessions) as session:
            row = locked(session, uid)
            if row.state is UpsState.COMPLETED:
                raise UpsError(UpsStatus.ALREADY_COMPLETED, "the UPS is already COMPLETED")
            if row.state is UpsState.CANCELED:
                return UpsStatus.ALREADY_CANCELED
            row.cancel_reason = reason or f"cancel requested by {requester or 'a user'}"
            row.cancel_requested_at = utcnow()
            if row.state is UpsState.SCHEDULED:
                claim = new_transaction_uid()
                change_in(session, row, UpsState.IN_PROGRESS, claim, NODE_PERFORMER)
                change_in(session, row, UpsState.CANCELED, claim, NODE_PERFORMER)
            else:
                info = attrs.cancel_requested(requester, request)
                told = announce(session, row, dataset_of(row), attrs.CANCEL_REQUESTED, info)
                if not told and row.performer != NODE_PERFORMER:
                    raise UpsError(
                        UpsStatus.PERFORMER_CANNOT_BE_CONTACTED,
                        "the performer cannot be told: nobody is subscribed to this UPS",
                    )
        self._woken()
        return UpsStatus.SUCCESS

    def find(self, query: Dataset, limit: int | None = None, offset: int = 0) -> list[Dataset]:
        """C-FIND: the identifiers of the workitems that match ``query`` (oldest first)."""
        statement = select(Workitem).order_by(Workitem.id)
        state = str(query.get("ProcedureStepState") or "")
        if state in {s.value for s in UpsState}:
            statement = statement.where(Workitem.state == UpsState(state))
        uids = values_of(query["SOPInstanceUID"]) if "SOPInstanceUID" in query else []
        if uids:
            statement = statement.where(Workitem.sop_instance_uid.in_(uids))
        found: list[Dataset] = []
        with self.sessions() as session:
            for row in session.scalars(statement).yield_per(200):
                dataset = dataset_of(row)
                if not matches(dataset, query):
                    continue
                if offset > 0:
                    offset -= 1
                    continue
                found.append(answer(dataset, query))
                if limit is not None and len(found) >= limit:
                    break
        return found
