"""The worklist's tables: DICOM Unified Procedure Steps (UPS workitems), who subscribed to
their events, and the events still to be sent.

A workitem is one task of the IHE AI Workflow for Imaging profile (AIW-I): an analysis
the node runs (every job is one, ``Job.workitem_pk``), one a RIS or worklist asked the
node for (a study to retrieve and analyse), or one the node claimed from another UPS
provider (pull mode). Its state follows PS3.4 CC.1.1: SCHEDULED, IN PROGRESS, then
COMPLETED or CANCELED, never back.

Written by ``node.ups.book`` only (``Workitem``, ``UpsSubscription``, ``UpsEvent``
rows); the event dispatcher marks an event sent. Read by the UPS DIMSE service, UPS-RS
and the dashboard.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, DateTime, Enum, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from node.db.declarative import Base, utcnow

_UID = String(64)


class UpsState(enum.StrEnum):
    """Procedure Step State (0074,1000), PS3.4 CC.1.1; the values as DICOM writes them."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    CANCELED = "CANCELED"
    COMPLETED = "COMPLETED"


class UpsPriority(enum.StrEnum):
    """Scheduled Procedure Step Priority (0074,1200): also a job's priority."""

    STAT = "STAT"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        """0 for STAT (first) to 3 for LOW: the order work is taken in."""
        return list(UpsPriority).index(self)


class WorkitemOrigin(enum.StrEnum):
    """Why the node holds a workitem."""

    NODE = "node"  # an analysis the node routed itself (one job)
    REQUESTED = "requested"  # created by a RIS or worklist: a study to retrieve and analyse
    PULLED = "pulled"  # claimed from another UPS provider (pull mode, AIW-I task performer)


class Workitem(Base):
    """One Unified Procedure Step the node provides or performs.

    ``dataset`` holds the workitem's attributes in the DICOM JSON model (PS3.18 F.2), as
    created and then set; the columns repeat what the node queries and orders by.
    """

    __tablename__ = "workitem"
    __table_args__ = (
        Index("ix_workitem_state_priority", "state", "priority"),  # the worklist's order
        Index("ix_workitem_study", "study_instance_uid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    origin: Mapped[WorkitemOrigin] = mapped_column(
        Enum(WorkitemOrigin, native_enum=False, length=16), default=WorkitemOrigin.NODE
    )
    state: Mapped[UpsState] = mapped_column(
        Enum(UpsState, native_enum=False, length=16), default=UpsState.SCHEDULED
    )
    priority: Mapped[UpsPriority] = mapped_column(
        Enum(UpsPriority, native_enum=False, length=8), default=UpsPriority.MEDIUM
    )
    label: Mapped[str] = mapped_column(String(64), default="")  # Procedure Step Label
    worklist_label: Mapped[str] = mapped_column(String(64), default="")
    study_instance_uid: Mapped[str] = mapped_column(_UID, default="")  # the input study
    requested_model: Mapped[str] = mapped_column(String(64), default="")  # "": any that accepts
    # Set while IN PROGRESS: the Transaction UID the performer claimed it with (kept
    # secret from everyone but the performer), and who that performer is.
    transaction_uid: Mapped[str | None] = mapped_column(_UID, nullable=True)
    performer: Mapped[str] = mapped_column(String(64), default="")
    progress: Mapped[int | None] = mapped_column(Integer, nullable=True)  # percent
    progress_description: Mapped[str] = mapped_column(Text, default="")
    cancel_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    # Pull mode: which configured provider it came from (its UID is the provider's),
    # and the Transaction UID the node claimed it there with (it completes it with it).
    provider: Mapped[str] = mapped_column(String(64), default="")
    provider_transaction_uid: Mapped[str | None] = mapped_column(_UID, nullable=True)
    dataset: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UpsSubscription(Base):
    """An AE title subscribed to one workitem's events, or to all (``workitem_uid`` "")."""

    __tablename__ = "ups_subscription"
    __table_args__ = (UniqueConstraint("subscriber", "workitem_uid", name="uq_ups_subscription"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(64))  # an AE title, or "web:<id>"
    workitem_uid: Mapped[str] = mapped_column(_UID, default="")  # "": global subscription
    deletion_lock: Mapped[bool] = mapped_column(default=False)
    # A global subscription made with a filter (PS3.4 CC.2.3.1): its matching keys.
    filter: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UpsEvent(Base):
    """A UPS event (N-EVENT-REPORT) for one subscriber, kept until it has been sent.

    Written in the transaction that changed the workitem, so no state change is ever
    announced that did not happen, nor one lost that did.
    """

    __tablename__ = "ups_event"
    __table_args__ = (Index("ix_ups_event_pending", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(64))
    workitem_uid: Mapped[str] = mapped_column(_UID)
    event_type: Mapped[int] = mapped_column(Integer)  # Event Type ID, PS3.4 CC.2.4.2
    info: Mapped[dict] = mapped_column(JSON, default=dict)  # Event Information, DICOM JSON
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
