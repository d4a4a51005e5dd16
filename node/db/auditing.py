"""The audit trail's table: one row per audited event, never updated or deleted.

Written by ``node.audit.trail.AuditTrail`` only; read by ``GET /api/audit``
(``node.web.routes.audit``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Enum, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from node.audit.events import AuditKind
from node.db.declarative import Base, utcnow


class AuditEvent(Base):
    """One audit trail entry. ``outcome``: DICOM EventOutcomeIndicator; ``detail``: the
    event's own fields (``node.audit.events``)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_occurred_at", "occurred_at"),  # newest first
        Index("ix_audit_event_kind_occurred_at", "kind", "occurred_at"),  # one kind
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[AuditKind] = mapped_column(Enum(AuditKind, native_enum=False, length=32))
    outcome: Mapped[int] = mapped_column(Integer, default=0)
    actor: Mapped[str] = mapped_column(String(128), default="")  # user name or AE title
    actor_role: Mapped[str] = mapped_column(String(32), default="")
    peer_address: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
