"""Sending jobs to the workers: ids only, after the rows that describe them are committed.

Each message is recorded in the ledger as enqueued (when it is due to be taken), so the
reconciler re-sends only what is overdue. Nothing else happens here: job state is the
ledger's, deliveries are the outbox's.
"""

from __future__ import annotations

import logging

from celery import Celery

from node.jobs.contracts import ANALYZE_TASK, DELIVER_TASK, GPU_QUEUE, IO_QUEUE
from node.jobs.ledger import JobLedger

log = logging.getLogger(__name__)


class JobQueue:
    """Puts a job on the analysis (gpu) or the delivery (io) queue."""

    def __init__(self, app: Celery, ledger: JobLedger) -> None:
        self.app = app
        self.ledger = ledger

    def send_analysis(self, job_id: int) -> None:
        self.app.send_task(ANALYZE_TASK, args=[job_id], queue=GPU_QUEUE)
        self.ledger.mark_enqueued(job_id)
        log.info("job %s queued for analysis", job_id)

    def send_delivery(self, job_id: int, countdown: float = 0.0) -> None:
        """Queue a delivery pass for the job, due after ``countdown`` seconds."""
        self.app.send_task(DELIVER_TASK, args=[job_id], queue=IO_QUEUE, countdown=countdown)
        self.ledger.mark_enqueued(job_id, countdown)
