"""Recording the storage commitment reports archives send to the node's Storage SCP.

An archive answers a commitment request later, with an N-EVENT-REPORT on an
association it opens (``node.delivery.commitment``). The report decides the outbox
rows waiting under its Transaction UID; each job it concerns is then settled by the
ledger, and a job with a failed commitment gets its next delivery pass when the retry
is due, instead of waiting for the commitment deadline. With a ``ResultsAudit``, each
report is then told to the audit trail.
"""

from __future__ import annotations

import logging
from typing import Protocol

from node.audit.results import ResultsAudit
from node.delivery.commitment import CommitmentReport, failure_reasons
from node.delivery.outbox import Outbox
from node.jobs.ledger import JobLedger

log = logging.getLogger(__name__)


class DeliveryMessages(Protocol):
    """What schedules a job's next delivery pass (``node.jobs.queue.JobQueue``)."""

    def send_delivery(self, job_id: int, countdown: float = 0.0) -> None: ...


class CommitmentReports:
    """Records each report; :meth:`record` is the Storage SCP's report callback."""

    def __init__(
        self,
        outbox: Outbox,
        ledger: JobLedger,
        messages: DeliveryMessages,
        audit: ResultsAudit | None = None,
    ) -> None:
        self.outbox = outbox
        self.ledger = ledger
        self.messages = messages
        self.audit = audit

    def record(self, report: CommitmentReport) -> None:
        """Apply ``report`` to the outbox and settle the jobs it names.

        Raises when it cannot be recorded; the SCP then answers the archive with a
        processing failure, so the archive may report again.
        """
        audit = self.audit
        awaiting = audit.awaiting_commitment(report.transaction_uid) if audit is not None else []
        jobs = self.outbox.commitment_report(
            report.transaction_uid, report.committed, failure_reasons(report)
        )
        for job_id in sorted(jobs):
            settled = self.ledger.settle(job_id, self.outbox.settlement)
            if report.failed and settled.wait_seconds is not None:
                self.messages.send_delivery(job_id, countdown=settled.wait_seconds)
            log.info("job %s: storage commitment %s recorded", job_id, report.transaction_uid)
        if audit is not None:
            audit.commitment_received(report, awaiting)
