"""One delivery pass for a job: the outbox rows that are due, to their destinations.

A pass claims what is due, sends it destination by destination through the kind's own
send (``node.delivery.kinds``), asks for storage commitment where the destination
wants it, records each outcome in the outbox, has the ledger settle the job from the
outbox's verdict, and returns how long to wait before the next pass (None when
nothing is left open). Whoever runs the pass (the worker's delivery task) schedules
the next one; everything the pass needs is handed to it.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from node.db.models import JobState
from node.delivery.commitment import failure_reasons, new_transaction_uid, request_commitment
from node.delivery.destinations import Destination
from node.delivery.kinds import send
from node.delivery.outbox import DueDelivery, Outbox
from node.delivery.transports import DeliveryError, Outgoing
from node.jobs.ledger import JobLedger
from node.settings import Settings

log = logging.getLogger(__name__)


def deliver_due(job_id: int, settings: Settings, outbox: Outbox, ledger: JobLedger) -> float | None:
    """One delivery pass for ``job_id``; seconds until the next pass is due, or None."""
    if ledger.state_of(job_id) is not JobState.DELIVERING:
        return None
    by_destination: dict[str, list[DueDelivery]] = defaultdict(list)
    for due in outbox.claim_due(job_id):
        by_destination[due.destination].append(due)
    for name, due in by_destination.items():
        destination = settings.destination(name)
        if destination is None:
            outbox.failed([d.id for d in due], f"destination {name} is no longer configured")
            continue
        _deliver(settings, outbox, destination, due)
    settled = ledger.settle(job_id, outbox.settlement)
    if settled.state is not JobState.DELIVERING:
        log.info("job %s: delivery finished, %s", job_id, settled.state.value)
    return settled.wait_seconds


def _deliver(
    settings: Settings, outbox: Outbox, destination: Destination, due: list[DueDelivery]
) -> None:
    """Send ``due`` to ``destination`` and record the outcome; ask for commitment if wanted."""
    ids = [d.id for d in due]
    outgoing = [
        Outgoing(settings.results_dir / d.path, d.sop_class_uid, d.sop_instance_uid) for d in due
    ]
    try:
        send(destination, outgoing, settings.ae_title)
    except (DeliveryError, OSError) as exc:
        log.warning("delivery of %d object(s) to %s failed: %s", len(due), destination, exc)
        outbox.failed(ids, str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, never lost
        log.exception("delivery to %s broke", destination)
        outbox.failed(ids, f"internal error: {type(exc).__name__}: {exc}")
        return
    archive = destination.commitment_ae
    if archive is None:
        outbox.stored(ids)
        log.info("delivered %d object(s) to %s", len(due), destination)
        return
    transaction_uid = new_transaction_uid()
    # Recorded before asking: the archive's report may arrive before the N-ACTION
    # returns, and must find the rows waiting for it.
    outbox.stored(ids, transaction_uid)
    try:
        report = request_commitment(
            archive,
            settings.ae_title,
            [(d.sop_class_uid, d.sop_instance_uid) for d in due],
            transaction_uid,
        )
    except (DeliveryError, ValueError) as exc:
        log.warning("storage commitment request to %s failed: %s", destination, exc)
        outbox.failed(ids, f"stored, but the commitment request failed: {exc}")
        return
    if report is not None:  # answered on the same association
        outbox.commitment_report(report.transaction_uid, report.committed, failure_reasons(report))
    log.info("stored %d object(s) at %s; commitment requested", len(due), destination)
