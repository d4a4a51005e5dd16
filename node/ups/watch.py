"""UPS Watch and Event on the book's side: subscriptions (N-ACTION types 3, 4, 5) and
the events still to be sent, which the senders take and mark (the DIMSE dispatcher,
``node.ups.event_dispatcher``; UPS-RS's notifications for ``web:`` subscribers).

Subscriptions: a global one is a row with ``workitem_uid`` "" (its ``filter`` the
matching keys of a filtered global subscription); its subscriber gets the events of
every workitem (that matches). Suspending it turns it into one row per workitem not yet
final, so new workitems no longer reach the subscriber. Limitation: while a global
subscription holds, unsubscribing from one workitem leaves its events coming (the
table has no place to remember the exception); unsubscribe globally instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom import Dataset
from sqlalchemy import delete, select

from node.db.declarative import utcnow
from node.db.session import SessionFactory, transaction
from node.db.worklist import UpsEvent, UpsState, UpsSubscription, Workitem
from node.ups import attributes as attrs
from node.ups.matching import matches
from node.ups.rows import GLOBAL_KEYS, dataset_of, locked
from node.ups.states import FINAL


@dataclass(frozen=True)
class PendingEvent:
    """An event still to be sent: to whom, about which workitem, what it says."""

    id: int
    subscriber: str
    workitem_uid: str
    event_type: int
    info: Dataset
    attempts: int


class WatchBook:
    """The subscription and event half of :class:`node.ups.book.WorkitemBook`."""

    sessions: SessionFactory
    on_commit: Callable[[], None] | None

    def _woken(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    # UPS Watch ------------------------------------------------------------------------

    def subscribe(
        self, subscriber: str, uid: str = "", deletion_lock: bool = False,
        filter: Dataset | None = None,  # noqa: A002 - the standard's word
    ) -> None:  # fmt: skip
        """N-ACTION Subscribe (type 3): to one workitem, or globally (``uid`` "" or the
        global instance UIDs; ``filter`` the matching keys of a filtered global one).
        The subscriber is sent a State Report of the workitem, or of every workitem not
        yet final (that matches) for a global subscription (CC.2.3.3)."""
        is_global = uid in GLOBAL_KEYS
        key = "" if is_global else uid
        with transaction(self.sessions) as session:
            if is_global:
                rows = session.scalars(
                    select(Workitem).where(
                        Workitem.state.in_([UpsState.SCHEDULED, UpsState.IN_PROGRESS])
                    )
                ).all()
            else:
                rows = [locked(session, uid)]
            row_of = session.scalars(
                select(UpsSubscription).where(
                    UpsSubscription.subscriber == subscriber, UpsSubscription.workitem_uid == key
                )
            ).first()
            if row_of is None:
                row_of = UpsSubscription(subscriber=subscriber, workitem_uid=key)
                session.add(row_of)
            row_of.deletion_lock = deletion_lock
            row_of.filter = attrs.to_json(filter) if filter is not None and is_global else {}
            keys = filter if filter is not None and is_global else Dataset()
            for row in rows:
                dataset = dataset_of(row)
                if matches(dataset, keys):
                    session.add(
                        UpsEvent(subscriber=subscriber, workitem_uid=row.sop_instance_uid,
                                 event_type=attrs.STATE_REPORT,
                                 info=attrs.to_json(attrs.state_report(dataset)))
                    )  # fmt: skip
        self._woken()

    def unsubscribe(self, subscriber: str, uid: str = "") -> None:
        """N-ACTION Unsubscribe (type 4): from one workitem, or (globally) from the
        global list and every workitem."""
        with transaction(self.sessions) as session:
            statement = delete(UpsSubscription).where(UpsSubscription.subscriber == subscriber)
            if uid not in GLOBAL_KEYS:
                locked(session, uid)  # C307 when unknown
                statement = statement.where(UpsSubscription.workitem_uid == uid)
            session.execute(statement)

    def suspend_global(self, subscriber: str) -> None:
        """N-ACTION Suspend Global Subscription (type 5): no new workitem reaches the
        subscriber; those not yet final keep it subscribed (a row each)."""
        with transaction(self.sessions) as session:
            glob = session.scalars(
                select(UpsSubscription).where(
                    UpsSubscription.subscriber == subscriber, UpsSubscription.workitem_uid == ""
                )
            ).first()
            if glob is None:
                return
            keys = attrs.from_json(glob.filter) if glob.filter else Dataset()
            have = set(session.scalars(
                select(UpsSubscription.workitem_uid).where(UpsSubscription.subscriber == subscriber)
            ))  # fmt: skip
            for row in session.scalars(select(Workitem).where(Workitem.state.not_in(FINAL))):
                if row.sop_instance_uid not in have and matches(dataset_of(row), keys):
                    kept = UpsSubscription(subscriber=subscriber, workitem_uid=row.sop_instance_uid)
                    kept.deletion_lock = glob.deletion_lock
                    session.add(kept)
            session.delete(glob)

    # Events ---------------------------------------------------------------------------

    def pending_events(
        self,
        prefix: str = "",
        exclude_prefix: str | None = None,
        limit: int = 100,
        subscriber: str | None = None,
    ) -> list[PendingEvent]:
        """Events not yet sent to subscribers whose name starts with ``prefix`` (and not
        with ``exclude_prefix``; exactly ``subscriber`` when given), oldest first."""
        statement = select(UpsEvent).where(UpsEvent.sent_at.is_(None))
        if subscriber is not None:  # UPS-RS's channel: "web:AE" must not take "web:AE2"'s
            statement = statement.where(UpsEvent.subscriber == subscriber)
        if prefix:
            statement = statement.where(UpsEvent.subscriber.startswith(prefix, autoescape=True))
        if exclude_prefix:
            statement = statement.where(
                ~UpsEvent.subscriber.startswith(exclude_prefix, autoescape=True)
            )
        with self.sessions() as session:
            rows = session.scalars(statement.order_by(UpsEvent.id).limit(limit)).all()
            return [
                PendingEvent(r.id, r.subscriber, r.workitem_uid, r.event_type,
                             attrs.from_json(r.info or {}), r.attempts)
                for r in rows
            ]  # fmt: skip

    def mark_sent(self, event_ids: Sequence[int]) -> None:
        if not event_ids:
            return
        with transaction(self.sessions) as session:
            for row in session.scalars(select(UpsEvent).where(UpsEvent.id.in_(list(event_ids)))):
                row.sent_at = utcnow()
                row.attempts += 1
                row.last_error = ""

    def mark_failed(self, event_id: int, error: str) -> None:
        with transaction(self.sessions) as session:
            row = session.get(UpsEvent, event_id)
            if row is not None:
                row.attempts += 1
                row.last_error = error[:2000]

    def take_pending(
        self, prefix: str, subscriber: str | None = None, limit: int = 100
    ) -> list[PendingEvent]:
        """Pending events of subscribers named ``prefix``... (``subscriber`` alone when
        given), marked sent as they are taken: for a sender that cannot fail after it
        took them (UPS-RS's WebSocket takes with ``pending_events`` and ``mark_sent``
        when it must be sure)."""
        events = self.pending_events(subscriber or prefix, limit=limit)
        if subscriber is not None:
            events = [e for e in events if e.subscriber == subscriber]
        self.mark_sent([e.id for e in events])
        return events
