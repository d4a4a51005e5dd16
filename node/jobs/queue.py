"""Sending jobs to the workers: ids only, after the rows that describe them are committed."""

from __future__ import annotations

import logging

from celery import Celery

from node.jobs.contracts import ANALYSE_TASK, DELIVER_TASK, GPU_QUEUE, IO_QUEUE
from node.jobs.ledger import JobLedger

log = logging.getLogger(__name__)


class JobQueue:
    def __init__(self, app: Celery, ledger: JobLedger) -> None:
        self.app = app
        self.ledger = ledger

    def send_analysis(self, job_id: int) -> None:
        self.app.send_task(ANALYSE_TASK, args=[job_id], queue=GPU_QUEUE)
        self.ledger.mark_enqueued(job_id)
        log.info("job %s queued for analysis", job_id)

    def send_delivery(self, job_id: int, countdown: float = 0.0) -> None:
        self.app.send_task(DELIVER_TASK, args=[job_id], queue=IO_QUEUE, countdown=countdown)
        self.ledger.mark_enqueued(job_id)

    def retry(self, job_id: int) -> None:
        """Reset a finished job and queue it again (raises LookupError / ValueError)."""
        self.ledger.reset_for_retry(job_id)
        self.send_analysis(job_id)
