"""``GET /api/audit``: the audit trail newest first, for admins.

Filters: ``kind`` (repeatable), ``actor`` (exact user name or AE title), ``since``
(ISO 8601; without an offset it is UTC) and ``limit``. Rows are written by
``node.audit.trail`` only; this module reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import computed_field
from sqlalchemy import select

from node.audit.events import AuditKind, EventOutcome
from node.db.auditing import AuditEvent
from node.web.routes.deps import SessionDep
from node.web.routes.schemas import RowOut, UtcDatetime

router = APIRouter(tags=["audit"])


class AuditEventOut(RowOut):
    """One audit trail entry; ``outcome`` is DICOM's EventOutcomeIndicator (0, 4, 8, 12)."""

    id: int
    occurred_at: UtcDatetime
    kind: AuditKind
    outcome: int
    actor: str  # user name or AE title
    actor_role: str
    peer_address: str
    detail: dict[str, Any]  # the event's own fields (AE titles, TLS identity, UIDs, reason)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome_text(self) -> str:
        """ "success", "minor failure", "serious failure" or "major failure"."""
        try:
            return EventOutcome(self.outcome).text
        except ValueError:
            return str(self.outcome)


@router.get("/audit")
def list_audit_events(
    session: SessionDep,
    kind: Annotated[list[AuditKind] | None, Query()] = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventOut]:
    """Audit trail entries, newest first."""
    query = select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    if kind:
        query = query.where(AuditEvent.kind.in_(kind))
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if since is not None:
        utc = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
        query = query.where(AuditEvent.occurred_at >= utc)
    rows = session.scalars(query.limit(limit))
    return [AuditEventOut.model_validate(row) for row in rows]
