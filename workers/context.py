"""What a worker process holds for its whole life: settings, database, models, device,
and its own audit trail (``node.audit``), which ``ainode worker`` closes when it stops.

Built once when the worker starts (never at import time) and handed to the tasks.
The device is chosen here but CUDA is only touched when the first model is loaded,
inside the process that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from celery import Celery

from models.registry import ModelRegistry, discover_packages
from node.audit.results import ResultsAudit
from node.audit.trail import AuditTrail
from node.db.session import SessionFactory, make_engine, make_session_factory
from node.delivery.outbox import Outbox
from node.jobs.celery_app import make_celery
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.settings import Settings
from node.storage import DurableFolder
from workers.infer import NetworkCache, select_device


@dataclass
class WorkerContext:
    settings: Settings
    sessions: SessionFactory
    ledger: JobLedger
    outbox: Outbox
    queue: JobQueue
    registry: ModelRegistry
    results: DurableFolder
    device: torch.device
    cache: NetworkCache
    trail: AuditTrail
    results_audit: ResultsAudit  # results sent and committed, told to ``trail``

    @classmethod
    def build(cls, settings: Settings, broker_url: str) -> tuple[WorkerContext, Celery]:
        sessions = make_session_factory(make_engine(settings))
        ledger = JobLedger(sessions, settings.max_job_attempts)
        outbox = Outbox(sessions, settings)
        app = make_celery(broker_url, settings.visibility_timeout_seconds)
        trail = AuditTrail.from_settings(settings, sessions)
        context = cls(
            settings=settings,
            sessions=sessions,
            ledger=ledger,
            outbox=outbox,
            queue=JobQueue(app, ledger),
            registry=discover_packages(settings.models_dir),
            results=DurableFolder(settings.results_dir),
            device=select_device(settings.device),
            cache=NetworkCache(),
            trail=trail,
            results_audit=ResultsAudit(trail, sessions, settings),
        )
        return context, app
