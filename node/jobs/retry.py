"""An operator's retry of a finished job (``POST /api/jobs/{id}/retry``).

A job that failed because its deliveries were dead-lettered sends its results again
(its dead rows start over, and it is DELIVERING again); any other finished job is
analysed again from the start (QUEUED). The ledger makes either transition.
"""

from __future__ import annotations

import logging

from node.delivery.outbox import Outbox
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue

log = logging.getLogger(__name__)


class JobRetry:
    """The web's ``retry_job``: call it with a job id."""

    def __init__(self, ledger: JobLedger, outbox: Outbox, queue: JobQueue) -> None:
        self.ledger = ledger
        self.outbox = outbox
        self.queue = queue

    def __call__(self, job_id: int) -> None:
        """Retry ``job_id``; LookupError if it does not exist, ValueError if not finished."""
        if self.ledger.redeliver(job_id, self.outbox.revive_dead):
            log.info("job %s: re-sending its dead-lettered deliveries", job_id)
            self.queue.send_delivery(job_id)
            return
        self.ledger.reset_for_retry(job_id)
        self.queue.send_analysis(job_id)
