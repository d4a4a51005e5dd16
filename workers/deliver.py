"""Delivering a job's results: the outbox rows that are due, to their destinations.

One pass claims what is due, sends it destination by destination (C-STORE or
STOW-RS), asks for storage commitment where the destination wants it, records each
outcome in the outbox and returns how long to wait before the next pass (None when
nothing is left open). The task that calls it schedules that next pass.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from node.commitment import failure_reasons, new_transaction_uid, request_commitment
from node.db.models import JobState
from node.dispatch import DeliveryError, Outgoing, store_files
from node.jobs.outbox import DueDelivery
from node.settings import Destination
from node.stow import stow_files
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def run_delivery(ctx: WorkerContext, job_id: int) -> float | None:
    """One delivery pass for ``job_id``; seconds until the next pass is due, or None."""
    if ctx.ledger.state_of(job_id) is not JobState.DELIVERING:
        return None
    by_destination: dict[str, list[DueDelivery]] = defaultdict(list)
    for due in ctx.outbox.claim_due(job_id):
        by_destination[due.destination].append(due)
    for name, due in by_destination.items():
        destination = ctx.settings.destination(name)
        if destination is None:
            ctx.outbox.failed([d.id for d in due], f"destination {name} is no longer configured")
            continue
        _deliver(ctx, destination, due)
    settled = ctx.outbox.settle(job_id)
    if settled.state is not JobState.DELIVERING:
        log.info("job %s: delivery finished, %s", job_id, settled.state.value)
    return settled.wait_seconds


def _deliver(ctx: WorkerContext, destination: Destination, due: list[DueDelivery]) -> None:
    ids = [d.id for d in due]
    outgoing = [
        Outgoing(ctx.settings.results_dir / d.path, d.sop_class_uid, d.sop_instance_uid)
        for d in due
    ]
    try:
        _send(ctx, destination, outgoing)
    except (DeliveryError, OSError) as exc:
        log.warning("delivery of %d object(s) to %s failed: %s", len(due), destination, exc)
        ctx.outbox.failed(ids, str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, never lost
        log.exception("delivery to %s broke", destination)
        ctx.outbox.failed(ids, f"internal error: {type(exc).__name__}: {exc}")
        return
    archive = destination.dicom_destination
    if not destination.storage_commitment or archive is None:
        ctx.outbox.stored(ids)
        log.info("delivered %d object(s) to %s", len(due), destination)
        return
    transaction_uid = new_transaction_uid()
    # Recorded before asking: the archive's report may arrive before the N-ACTION
    # returns, and must find the rows waiting for it.
    ctx.outbox.stored(ids, transaction_uid)
    try:
        report = request_commitment(
            archive,
            ctx.settings.ae_title,
            [(d.sop_class_uid, d.sop_instance_uid) for d in due],
            transaction_uid,
        )
    except (DeliveryError, ValueError) as exc:
        log.warning("storage commitment request to %s failed: %s", destination, exc)
        ctx.outbox.failed(ids, f"stored, but the commitment request failed: {exc}")
        return
    if report is not None:  # answered on the same association
        ctx.outbox.commitment_report(
            report.transaction_uid, report.committed, failure_reasons(report)
        )
    log.info("stored %d object(s) at %s; commitment requested", len(due), destination)


def _send(ctx: WorkerContext, destination: Destination, outgoing: list[Outgoing]) -> None:
    archive = destination.dicom_destination
    if archive is not None:
        store_files(archive, ctx.settings.ae_title, outgoing)
    elif destination.stow_url is not None:
        stow_files(destination.stow_url, outgoing, headers=destination.http_headers)
