"""What every worker process holds for its whole life: settings, database, the job
ledger and outbox, the queue, and its own audit trail (``node.audit``), which
``ainode worker`` closes when it stops.

Built once when the worker starts (never at import time) and handed to the tasks. It
holds nothing of torch: a delivery worker (queue ``io``) has only this; an analysis
worker (queue ``gpu``) also builds a ``workers.analysis_context.AnalysisContext``,
with the models warm on its device.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from node.audit.results import ResultsAudit
from node.audit.trail import AuditTrail
from node.db.session import SessionFactory, make_engine, make_session_factory
from node.delivery.outbox import Outbox
from node.jobs.celery_app import make_celery
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.settings import Settings


@dataclass
class WorkerContext:
    settings: Settings
    sessions: SessionFactory
    ledger: JobLedger
    outbox: Outbox
    queue: JobQueue
    trail: AuditTrail
    results_audit: ResultsAudit  # results sent and committed, told to ``trail``

    @classmethod
    def build(cls, settings: Settings, broker_url: str) -> tuple[WorkerContext, Celery]:
        sessions = make_session_factory(make_engine(settings))
        ledger = JobLedger(sessions, settings.max_job_attempts)
        app = make_celery(broker_url, settings.visibility_timeout_seconds)
        trail = AuditTrail.from_settings(settings, sessions)
        context = cls(
            settings=settings,
            sessions=sessions,
            ledger=ledger,
            outbox=Outbox(sessions, settings),
            queue=JobQueue(app, ledger),
            trail=trail,
            results_audit=ResultsAudit(trail, sessions, settings),
        )
        return context, app
