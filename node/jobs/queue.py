"""Sending jobs to the workers: ids only, after the rows that describe them are committed."""

from __future__ import annotations

import logging

from celery import Celery

from node.commitment import CommitmentReport, failure_reasons
from node.jobs.contracts import ANALYSE_TASK, DELIVER_TASK, GPU_QUEUE, IO_QUEUE
from node.jobs.ledger import JobLedger
from node.jobs.outbox import Outbox

log = logging.getLogger(__name__)


class JobQueue:
    def __init__(self, app: Celery, ledger: JobLedger, outbox: Outbox) -> None:
        self.app = app
        self.ledger = ledger
        self.outbox = outbox

    def send_analysis(self, job_id: int) -> None:
        self.app.send_task(ANALYSE_TASK, args=[job_id], queue=GPU_QUEUE)
        self.ledger.mark_enqueued(job_id)
        log.info("job %s queued for analysis", job_id)

    def send_delivery(self, job_id: int, countdown: float = 0.0) -> None:
        self.app.send_task(DELIVER_TASK, args=[job_id], queue=IO_QUEUE, countdown=countdown)
        self.ledger.mark_enqueued(job_id, countdown)

    def retry(self, job_id: int) -> None:
        """An operator's retry (raises LookupError / ValueError with the reason).

        A job that failed because its deliveries were dead-lettered sends its results
        again; any other finished job is analysed again.
        """
        if self.outbox.resend_dead(job_id):
            log.info("job %s: re-sending its dead-lettered deliveries", job_id)
            self.send_delivery(job_id)
            return
        self.ledger.reset_for_retry(job_id)
        self.send_analysis(job_id)

    def commitment_received(self, report: CommitmentReport) -> None:
        """Record an archive's storage commitment report and settle the jobs it names.

        A job with a failed commitment gets a delivery pass when its retry is due,
        instead of waiting for the commitment deadline.
        """
        jobs = self.outbox.commitment_report(
            report.transaction_uid, report.committed, failure_reasons(report)
        )
        for job_id in sorted(jobs):
            settled = self.outbox.settle(job_id)
            if report.failed and settled.wait_seconds is not None:
                self.send_delivery(job_id, countdown=settled.wait_seconds)
            log.info("job %s: storage commitment %s recorded", job_id, report.transaction_uid)
