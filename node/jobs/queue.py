"""Sending jobs to the workers: ids only, after the rows that describe them are committed.

Each message is recorded in the ledger as enqueued (when it is due to be taken), so the
reconciler re-sends only what is overdue. Each goes at its job's priority
(``Job.priority``, decided by routing: ``node.priority``), read from the row unless the
caller holds it, so a message re-sent by the reconciler, a retry or a re-analysis keeps
it. Nothing else happens here: job state is the ledger's, deliveries are the outbox's.
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import select

from node.db.models import Job
from node.db.worklist import UpsPriority
from node.jobs.celery_app import message_priority
from node.jobs.contracts import ANALYZE_TASK, DELIVER_TASK, GPU_QUEUE, IO_QUEUE
from node.jobs.ledger import JobLedger

log = logging.getLogger(__name__)


class JobQueue:
    """Puts a job on the analysis (gpu) or the delivery (io) queue, at its priority."""

    def __init__(self, app: Celery, ledger: JobLedger) -> None:
        self.app = app
        self.ledger = ledger

    def priority_of(self, job_id: int) -> UpsPriority:
        """The job's priority as routing decided it (MEDIUM for a job that is gone)."""
        with self.ledger.sessions() as session:
            found = session.scalar(select(Job.priority).where(Job.id == job_id))
        return found or UpsPriority.MEDIUM

    def send_analysis(self, job_id: int, priority: UpsPriority | None = None) -> None:
        """Queue the job's analysis; ``priority``: the job's, when the caller holds it."""
        priority = priority or self.priority_of(job_id)
        self.app.send_task(
            ANALYZE_TASK, args=[job_id], queue=GPU_QUEUE, priority=message_priority(priority)
        )
        self.ledger.mark_enqueued(job_id)
        log.info("job %s queued for analysis (%s)", job_id, priority.value)

    def send_delivery(self, job_id: int, countdown: float = 0.0) -> None:
        """Queue a delivery pass for the job, due after ``countdown`` seconds."""
        # An urgent job's results are also sent first when deliveries wait.
        self.app.send_task(
            DELIVER_TASK,
            args=[job_id],
            queue=IO_QUEUE,
            countdown=countdown,
            priority=message_priority(self.priority_of(job_id)),
        )
        self.ledger.mark_enqueued(job_id, countdown)
