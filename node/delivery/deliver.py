"""One delivery pass for a job: the outbox rows that are due, to their destinations.

A pass claims what is due, sends it destination by destination through the kind's own
send (``node.delivery.kinds``), asks for storage commitment where the destination
wants it, records each outcome in the outbox, has the ledger settle the job from the
outbox's verdict, and returns how long to wait before the next pass (None when
nothing is left open). Whoever runs the pass (the worker's delivery task) schedules
the next one; everything the pass needs is handed to it. With a ``ResultsAudit``, each
outcome of a try (stored; failed; stored but the commitment request failed) and each
report answered on the request's own association is told to the audit trail once the
outbox has recorded it.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from node.audit.results import ResultsAudit
from node.db.models import JobState, ResultKind
from node.delivery.commitment import (
    CommitmentReport,
    failure_reasons,
    new_transaction_uid,
    request_commitment,
)
from node.delivery.critical_facts import CriticalFacts, critical_facts
from node.delivery.destinations import Destination
from node.delivery.kinds import send
from node.delivery.outbox import DueDelivery, Outbox
from node.delivery.transports import DeliveryError, Outgoing
from node.jobs.ledger import JobLedger
from node.settings import Settings

log = logging.getLogger(__name__)


def deliver_due(
    job_id: int,
    settings: Settings,
    outbox: Outbox,
    ledger: JobLedger,
    audit: ResultsAudit | None = None,
) -> float | None:
    """One delivery pass for ``job_id``; seconds until the next pass is due, or None."""
    if ledger.state_of(job_id) is not JobState.DELIVERING:
        return None
    by_destination: dict[str, list[DueDelivery]] = defaultdict(list)
    claimed = outbox.claim_due(job_id)
    for due in claimed:
        by_destination[due.destination].append(due)
    # A Key Object Selection carries the job's critical findings to the notifications.
    has_key_objects = any(due.kind == ResultKind.KO for due in claimed)
    facts = critical_facts(outbox.sessions, job_id) if has_key_objects else None
    for name, due in by_destination.items():
        attempt = _Attempt(outbox, audit, name, [d.id for d in due])
        destination = settings.destination(name)
        if destination is None:
            attempt.failed(f"destination {name} is no longer configured")
            continue
        report = _deliver(settings, attempt, destination, due, facts)
        if report is not None:  # answered on the request's own association
            _record_report(outbox, report, audit)
    settled = ledger.settle(job_id, outbox.settlement)
    if settled.state is not JobState.DELIVERING:
        log.info("job %s: delivery finished, %s", job_id, settled.state.value)
    return settled.wait_seconds


class _Attempt:
    """One attempt of some rows at one destination: each outcome recorded in the outbox,
    then, once committed there, told to the audit trail."""

    def __init__(
        self, outbox: Outbox, audit: ResultsAudit | None, name: str, ids: list[int]
    ) -> None:
        self.outbox, self.audit, self.name, self.ids = outbox, audit, name, ids

    def stored(self, transaction_uid: str | None = None) -> None:
        self.outbox.stored(self.ids, transaction_uid)
        if self.audit is not None:
            self.audit.sent(self.name, self.ids)

    def failed(self, reason: str) -> None:
        self.outbox.failed(self.ids, reason)
        if self.audit is not None:
            self.audit.sent(self.name, self.ids, reason)


def _deliver(
    settings: Settings,
    attempt: _Attempt,
    destination: Destination,
    due: list[DueDelivery],
    facts: CriticalFacts | None = None,
) -> CommitmentReport | None:
    """Send ``due`` to ``destination`` and record the outcome; ask for commitment if wanted.

    Returns the commitment report when the archive answered on the same association
    (for the caller to record).
    """
    outgoing = [
        Outgoing(
            settings.results_dir / d.path,
            d.sop_class_uid,
            d.sop_instance_uid,
            finding=facts if d.kind == ResultKind.KO else None,
        )  # fmt: skip
        for d in due
    ]
    try:
        send(destination, outgoing, settings.ae_title)
    except (DeliveryError, OSError) as exc:
        log.warning("delivery of %d object(s) to %s failed: %s", len(due), destination, exc)
        attempt.failed(str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, never lost
        log.exception("delivery to %s broke", destination)
        attempt.failed(f"internal error: {type(exc).__name__}: {exc}")
        return None
    archive = destination.commitment_ae
    if archive is None:
        attempt.stored()
        log.info("delivered %d object(s) to %s", len(due), destination)
        return None
    transaction_uid = new_transaction_uid()
    # Recorded before asking: the archive's report may arrive before the N-ACTION
    # returns, and must find the rows waiting for it (and the audit trail the sending
    # before the report).
    attempt.stored(transaction_uid)
    try:
        report = request_commitment(
            archive,
            settings.ae_title,
            [(d.sop_class_uid, d.sop_instance_uid) for d in due],
            transaction_uid,
        )
    except (DeliveryError, ValueError) as exc:
        log.warning("storage commitment request to %s failed: %s", destination, exc)
        attempt.failed(f"stored, but the commitment request failed: {exc}")
        return None
    log.info("stored %d object(s) at %s; commitment requested", len(due), destination)
    return report


def _record_report(outbox: Outbox, report: CommitmentReport, audit: ResultsAudit | None) -> None:
    """Apply a commitment report the archive gave on the request's own association."""
    awaiting = audit.awaiting_commitment(report.transaction_uid) if audit is not None else []
    outbox.commitment_report(report.transaction_uid, report.committed, failure_reasons(report))
    if audit is not None:
        audit.commitment_received(report, awaiting)
