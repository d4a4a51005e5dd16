"""``ainode serve``: every role of the node on one machine.

Start order follows the data: database (migrated), broker (embedded Redis unless one
is configured), worker process, scheduler, Storage SCP, then the web server in the
foreground. Stopping reverses it, so nothing is accepted that cannot be processed.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from models.registry import ModelRegistry, discover_packages
from node.broker import EmbeddedRedis, broker_answers
from node.db.migrate import upgrade_to_head
from node.db.session import database_answers, make_engine, make_session_factory
from node.delivery.outbox import Outbox
from node.delivery.reports import CommitmentReports
from node.jobs.celery_app import make_celery
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.jobs.retry import JobRetry
from node.scheduler import Scheduler
from node.scp import StorageSCP
from node.settings import Settings
from node.storage import has_room
from node.store import sweep_at_start
from node.supervisor import ChildSupervisor
from node.web.app import create_app

log = logging.getLogger(__name__)


def _discover(settings: Settings) -> ModelRegistry:
    """The model packages the scheduler routes to; refused ones are logged with the rule."""
    registry = discover_packages(settings.models_dir)
    for path, reason in registry.refused:
        log.error("model package %s refused: %s", path, reason)
    log.info("models: %s", ", ".join(p.manifest.name for p in registry.packages) or "none")
    return registry


def serve(settings: Settings) -> None:
    """Start every role (order in the module docstring); return once the web server stops."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)

    embedded: EmbeddedRedis | None = None
    broker_url = settings.broker_url
    if not broker_url:
        embedded = EmbeddedRedis(settings.data_dir)
        broker_url = embedded.start()

    registry = _discover(settings)
    ledger = JobLedger(sessions)
    outbox = Outbox(sessions, settings)
    queue = JobQueue(make_celery(broker_url, settings.visibility_timeout_seconds), ledger)
    worker = ChildSupervisor(
        "worker",
        [sys.executable, "-m", "node.cli", "worker"],
        {**settings.worker_environment(), "AINODE_BROKER_URL": broker_url},
    )
    scheduler = Scheduler(settings, sessions, registry, queue, ledger)
    commitment_reports = CommitmentReports(outbox, ledger, queue)
    scp = StorageSCP(settings, sessions, on_commitment=commitment_reports.record)

    def health() -> dict[str, bool]:
        return {
            "scp": scp.listening,
            # Under AINODE_MIN_FREE_BYTES the SCP refuses C-STORE (A700) and this says why.
            "disk": has_room(settings.data_dir, settings.min_free_bytes),
            "database": database_answers(engine),
            "broker": broker_answers(broker_url),
            "scheduler": scheduler.alive,
            "worker": worker.alive,
        }

    app = create_app(settings, sessions, health=health, retry_job=JobRetry(ledger, outbox, queue))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.http_bind,
            port=settings.http_port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    )
    try:
        worker.start()
        scheduler.start()
        sweep_at_start(settings, sessions)  # what a crash left, before the SCP listens
        scp.start()
        log.info("web on http://%s:%s", settings.http_bind, settings.http_port)
        server.run()
    finally:
        scp.stop()
        scheduler.stop()
        worker.stop()
        if embedded is not None:
            embedded.stop()
        engine.dispose()
        log.info("node stopped")
