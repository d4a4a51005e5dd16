"""An operator's retry and an admin's re-analysis of a finished job.

- Retry (``POST /api/jobs/{id}/retry``, operator): a job that failed because its
  deliveries were dead-lettered sends those results again (its dead rows start over,
  and it is DELIVERING again). A job whose *analysis* failed is analysed again: it
  produced nothing that reached an archive, and running it once more is what an
  operator does after fixing the cause (a full disk, a model that was missing). A job
  that succeeded is refused: nothing failed, so nothing is re-sent.
- Re-analysis (``POST /api/jobs/{id}/reanalyse``, admin, with a reason): a finished job,
  succeeded or failed, is analysed again from the start (QUEUED). Result UIDs derive
  from the inputs and the model version, so the archive gets the same objects again,
  not duplicates.

The ledger makes every transition; each accepted action is kept as a ``JobAction`` row
(who, role, why, what was done), which ``/api/jobs`` shows with the job.
"""

from __future__ import annotations

import logging

from node.auth.principal import Principal
from node.db.models import JobAction, JobState
from node.db.session import transaction
from node.delivery.outbox import Outbox
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue

log = logging.getLogger(__name__)

RETRY = "retry"
REANALYSE = "reanalyse"


def _record(
    ledger: JobLedger, job_id: int, action: str, principal: Principal, reason: str, outcome: str
) -> None:
    with transaction(ledger.sessions) as session:
        session.add(
            JobAction(
                job_pk=job_id,
                action=action,
                actor=principal.name[:128],
                actor_role=principal.role.value,
                reason=reason[:2000],
                outcome=outcome,
            )
        )


class JobRetry:
    """The web's ``retry_job``: ``retry(job_id, principal, reason)``."""

    def __init__(self, ledger: JobLedger, outbox: Outbox, queue: JobQueue) -> None:
        self.ledger = ledger
        self.outbox = outbox
        self.queue = queue

    def __call__(self, job_id: int, principal: Principal, reason: str) -> None:
        """Retry ``job_id``; LookupError if it does not exist, ValueError with the reason
        when it may not be retried."""
        revived = self.ledger.redeliver(job_id, self.outbox.revive_dead)
        if revived:
            log.info("job %s: %s re-sends %d dead deliveries", job_id, principal.name, revived)
            _record(self.ledger, job_id, RETRY, principal, reason, f"re-sent {revived} deliveries")
            self.queue.send_delivery(job_id)
            return
        state = self.ledger.state_of(job_id)
        if state is None:
            raise LookupError(f"job {job_id} does not exist")
        if state is JobState.SUCCEEDED:
            raise ValueError(
                f"job {job_id} succeeded: nothing failed to re-send. Analysing it again "
                f"is an admin's re-analysis (POST /api/jobs/{job_id}/reanalyse, with a reason)"
            )
        if state is not JobState.FAILED:
            raise ValueError(f"job {job_id} is {state.value}; only a failed job is retried")
        self.ledger.reset_for_retry(job_id)
        log.info("job %s: %s retries its failed analysis", job_id, principal.name)
        _record(self.ledger, job_id, RETRY, principal, reason, "analysed again")
        self.queue.send_analysis(job_id)


class JobReanalysis:
    """The web's ``reanalyse_job``: ``reanalyse(job_id, principal, reason)``."""

    def __init__(self, ledger: JobLedger, queue: JobQueue) -> None:
        self.ledger = ledger
        self.queue = queue

    def __call__(self, job_id: int, principal: Principal, reason: str) -> None:
        """Analyse a finished job again; LookupError / ValueError (with the reason)."""
        if not reason.strip():
            raise ValueError("a re-analysis needs a reason")
        self.ledger.reset_for_retry(job_id)
        log.info("job %s: re-analysed by %s: %s", job_id, principal.name, reason)
        _record(self.ledger, job_id, REANALYSE, principal, reason.strip(), "analysed again")
        self.queue.send_analysis(job_id)
