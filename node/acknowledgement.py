"""Acknowledging critical findings: the one writer of their acknowledgement columns.

A critical finding (``node.db.findings.CriticalFinding``, written with the job's results
by ``node.jobs.critical_findings``) is acknowledged once, by someone who read it: who
(name and role), when, and an optional note. The first acknowledgement stands; a second is refused
(:class:`AlreadyAcknowledged`) and changes nothing. Taking it is one conditional UPDATE
(still unacknowledged), whose row count says who won, so two readers acknowledging at
once cannot both succeed, on SQLite as on PostgreSQL.

The web route (``node.web.routes.acknowledgements``) calls :func:`acknowledge` and tells
``record_action`` (the audit trail) who acknowledged what.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from node.auth.roles import Role
from node.db.declarative import utcnow
from node.db.findings import CriticalFinding
from node.db.session import transaction

MAX_NOTE_LENGTH = 2000


class AlreadyAcknowledged(ValueError):
    """The finding was acknowledged before; the message says by whom and when."""


@dataclass(frozen=True)
class Acknowledgement:
    """What an acknowledgement recorded."""

    finding_id: int
    by: str
    role: Role
    at: datetime
    note: str


def acknowledge(
    sessions: sessionmaker[Session], finding_id: int, actor: str, role: Role, note: str = ""
) -> Acknowledgement:
    """Record that ``actor`` (holding ``role``) acknowledged critical finding ``finding_id``.

    Raises
    ------
    LookupError
        When there is no such finding.
    AlreadyAcknowledged
        When it was acknowledged before (nothing is changed).
    ValueError
        When ``note`` is longer than :data:`MAX_NOTE_LENGTH`.
    """
    if len(note) > MAX_NOTE_LENGTH:
        raise ValueError(f"the note is longer than {MAX_NOTE_LENGTH} characters")
    at = utcnow()
    with transaction(sessions) as session:
        taken = session.execute(
            update(CriticalFinding)
            .where(CriticalFinding.id == finding_id, CriticalFinding.acknowledged_at.is_(None))
            .values(
                acknowledged_by=actor,
                acknowledged_role=role.value,
                acknowledged_at=at,
                acknowledgement_note=note,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if not taken:
            row = session.get(CriticalFinding, finding_id)
            if row is None:
                raise LookupError(f"critical finding {finding_id} not found")
            moment = row.acknowledged_at
            if moment is not None and moment.tzinfo is None:  # SQLite: written as UTC
                moment = moment.replace(tzinfo=UTC)
            when = moment.isoformat() if moment else "before"
            raise AlreadyAcknowledged(
                f"critical finding {finding_id} was acknowledged by {row.acknowledged_by} "
                f"({row.acknowledged_role}) at {when}"
            )
    return Acknowledgement(finding_id, actor, role, at, note)
