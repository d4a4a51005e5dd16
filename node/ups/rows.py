"""The workitem book's rows: the session-level writes of ``Workitem``, ``UpsSubscription``
and ``UpsEvent`` rows that ``node.ups.book`` (its own transactions) and
``node.ups.job_sync`` (inside the job ledger's transactions) make. Nothing else in the
node writes these tables (the package together is their one writer).
"""

from __future__ import annotations

import uuid

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db.declarative import utcnow
from node.db.worklist import (
    UpsEvent,
    UpsPriority,
    UpsState,
    UpsSubscription,
    Workitem,
    WorkitemOrigin,
)
from node.ups import attributes as attrs
from node.ups.matching import matches
from node.ups.states import FINAL, UpsError, UpsStatus, check_change, check_set

NODE_PERFORMER = "ainode"  # Workitem.performer when the node itself performs the step
GLOBAL_KEYS = ("", attrs.GLOBAL_SUBSCRIPTION, attrs.FILTERED_GLOBAL_SUBSCRIPTION)


def new_transaction_uid() -> str:
    """A Transaction UID for a claim the node makes itself (UUID-derived, PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"


def locked(session: Session, uid: str) -> Workitem:
    """The workitem ``uid``, locked for this transaction; UpsError C307 if unknown."""
    row = session.scalars(
        select(Workitem).where(Workitem.sop_instance_uid == uid).with_for_update()
    ).first()
    if row is None:
        raise UpsError(UpsStatus.NO_SUCH_WORKITEM, f"no workitem {uid}")
    return row


def dataset_of(row: Workitem) -> Dataset:
    return attrs.from_json(row.dataset or {})


def _store(row: Workitem, dataset: Dataset) -> None:
    dataset.pop(attrs.TRANSACTION_UID, None)
    row.dataset = attrs.to_json(dataset)
    row.progress, row.progress_description = attrs.progress_of(dataset)
    columns = attrs.columns(dataset)
    if row.priority is UpsPriority.STAT and columns["priority"] is UpsPriority.HIGH:
        del columns["priority"]  # STAT, which DICOM writes HIGH, stays STAT
    for name, value in columns.items():
        setattr(row, name, value)
    row.updated_at = utcnow()


def announce(
    session: Session, row: Workitem, dataset: Dataset, event_type: int, info: Dataset
) -> int:
    """Write ``info`` as an event of ``event_type`` for every subscriber of the
    workitem (its own and the global ones whose filter it matches); how many."""
    subscriptions = session.scalars(
        select(UpsSubscription).where(UpsSubscription.workitem_uid.in_([row.sop_instance_uid, ""]))
    ).all()
    wanted = {
        s.subscriber
        for s in subscriptions
        if s.workitem_uid or not s.filter or matches(dataset, attrs.from_json(s.filter))
    }
    body = attrs.to_json(info)
    for subscriber in sorted(wanted):
        session.add(
            UpsEvent(subscriber=subscriber, workitem_uid=row.sop_instance_uid,
                     event_type=event_type, info=body)
        )  # fmt: skip
    return len(wanted)


def create_in(
    session: Session,
    dataset: Dataset,
    uid: str,
    origin: WorkitemOrigin,
    provider: str = "",
) -> Workitem:
    """Create a SCHEDULED workitem in ``session``; UpsError when refused."""
    new = attrs.prepare_new(dataset, uid)
    if session.scalars(select(Workitem.id).where(Workitem.sop_instance_uid == uid)).first():
        raise UpsError(UpsStatus.DUPLICATE_SOP_INSTANCE, f"workitem {uid} exists already")
    row = Workitem(sop_instance_uid=uid, origin=origin, provider=provider[:64],
                   state=UpsState.SCHEDULED)  # fmt: skip
    _store(row, new)
    session.add(row)
    session.flush()
    announce(session, row, new, attrs.STATE_REPORT, attrs.state_report(new))
    if any(tag in new and new[tag].value for tag in attrs.ASSIGNING):
        announce(session, row, new, attrs.ASSIGNED, attrs.assigned(new))
    return row


def change_in(
    session: Session, row: Workitem, state: UpsState, transaction_uid: str | None, performer: str
) -> UpsStatus:
    """Change ``row``'s state (Table CC.1.1-2); a warning status when already there."""
    status = check_change(row.state, state, row.transaction_uid, transaction_uid)
    if status is not UpsStatus.SUCCESS:
        return status
    dataset = dataset_of(row)
    if state is UpsState.IN_PROGRESS:
        row.transaction_uid = transaction_uid
        row.performer = performer[:64]
    elif state is UpsState.COMPLETED:
        refusal = attrs.final_state_refusal(dataset, state)
        if refusal is not None:
            raise UpsError(UpsStatus.FINAL_STATE_NOT_MET, refusal)
    else:
        attrs.canceled(dataset, row.cancel_reason)
    if state in FINAL:
        row.finished_at = utcnow()
    row.state = state
    dataset.ProcedureStepState = state.value
    _store(row, dataset)
    announce(session, row, dataset, attrs.STATE_REPORT, attrs.state_report(dataset))
    return UpsStatus.SUCCESS


def set_in(session: Session, row: Workitem, changes: Dataset, transaction_uid: str | None) -> None:
    """Apply an N-SET's changes to ``row`` (Table CC.2.6-1)."""
    if transaction_uid is None and attrs.TRANSACTION_UID in changes:
        transaction_uid = str(changes[attrs.TRANSACTION_UID].value or "") or None
    check_set(row.state, row.transaction_uid, transaction_uid)
    refused = [e.keyword or str(e.tag) for e in changes if e.tag in attrs.NOT_SETTABLE
               and e.tag != attrs.TRANSACTION_UID]  # fmt: skip
    if refused:
        raise UpsError(
            UpsStatus.INVALID_ATTRIBUTE_VALUE, f"N-SET may not change {', '.join(refused)}"
        )
    dataset = dataset_of(row)
    for element in changes:
        if element.tag != attrs.TRANSACTION_UID:
            dataset[element.tag] = element
    _store(row, dataset)
    if "ProcedureStepProgressInformationSequence" in changes:
        announce(session, row, dataset, attrs.PROGRESS_REPORT, attrs.progress_report(dataset))
    if any(tag in changes for tag in attrs.ASSIGNING):
        announce(session, row, dataset, attrs.ASSIGNED, attrs.assigned(dataset))
