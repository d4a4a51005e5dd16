"""``ainode serve``: every role of the node on one machine.

Start order follows the data: database (migrated), broker (embedded Redis unless one
is configured), worker processes (analysis, delivery), scheduler, retention sweep,
Storage SCP, then the web server in the foreground. Stopping reverses it, so nothing
is accepted that cannot be processed.
The process's audit trail (``node.audit``) is told of the start once every role is up,
of each association, commitment report and web action meanwhile, and of the stop
once every role is down.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from models.registry import ModelRegistry, discover_packages
from node.audit.receiving import AssociationAudit
from node.audit.results import ResultsAudit
from node.audit.trail import AuditTrail
from node.audit.web_actions import action_recorder
from node.auth.accounts import AccountStore
from node.auth.bootstrap import ensure_first_admin
from node.broker import EmbeddedRedis, broker_answers
from node.completion_release import SeriesRelease
from node.db.migrate import upgrade_to_head
from node.db.session import database_answers, make_engine, make_session_factory
from node.delivery.outbox import Outbox
from node.delivery.reports import CommitmentReports
from node.jobs.celery_app import make_celery
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.jobs.retry import JobReanalysis, JobRetry
from node.performer.performer import Performer
from node.requests.request_runner import request_runner
from node.retention import Retention
from node.scheduler import Scheduler
from node.scp import StorageSCP, log_association
from node.settings import Settings
from node.storage import has_room
from node.store import sweep_at_start
from node.supervisor import worker_supervisors
from node.ups.service import UpsService
from node.web.app import create_app

log = logging.getLogger(__name__)


def _discover(settings: Settings) -> ModelRegistry:
    """The model packages the scheduler routes to; refused ones are logged with the rule."""
    registry = discover_packages(settings.models_dir)
    for path, reason in registry.refused:
        log.error("model package %s refused: %s", path, reason)
    log.info("models: %s", ", ".join(p.manifest.name for p in registry.packages) or "none")
    return registry


def _stop_on_sigterm() -> None:
    """Make SIGTERM end serve through its ``finally``, as Ctrl-C does, so every role is
    stopped and the stop audited. uvicorn catches SIGTERM while it serves and raises it
    again once the web server has stopped; with the default action the process would
    die right there. A second SIGTERM ends the process at once."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def serve(settings: Settings) -> None:
    """Start every role (order in the module docstring); return once the web server stops."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    ensure_first_admin(AccountStore(sessions), settings.data_dir)  # no account yet
    trail = AuditTrail.from_settings(settings, sessions)

    embedded: EmbeddedRedis | None = None
    broker_url = settings.broker_url
    if not broker_url:
        embedded = EmbeddedRedis(settings.data_dir)
        broker_url = embedded.start()

    registry = _discover(settings)
    ledger = JobLedger(sessions, settings.max_job_attempts)
    outbox = Outbox(sessions, settings)
    queue = JobQueue(make_celery(broker_url, settings.visibility_timeout_seconds), ledger)
    workers = worker_supervisors(settings, broker_url)  # settings in a private file, not env
    scheduler = Scheduler(settings, sessions, registry, queue, ledger)
    retention = Retention(settings, sessions)
    results_audit = ResultsAudit(trail, sessions, settings)
    commitment_reports = CommitmentReports(outbox, ledger, queue, results_audit)
    scp = StorageSCP(
        settings,
        sessions,
        on_commitment=commitment_reports.record,
        # A released association's series are marked and the scheduler woken, then the
        # log line and the audit trail.
        on_association=SeriesRelease(
            sessions, scheduler.wake, then=AssociationAudit(trail, then=log_association)
        ),
    )

    ups = UpsService(settings, sessions)  # the workitem book over DIMSE, its events
    # A RIS's requested workitems: the study retrieved, analysed, the workitem completed.
    requests = request_runner(settings, sessions, ups.book, scp, registry, queue)
    # Pull mode: other providers' workitems claimed, performed as requested ones, reported.
    performer = Performer(settings, settings.ae_title, sessions, ups.book)

    def health() -> dict[str, bool]:
        return {
            "scp": scp.listening,
            "ups": ups.listening,  # the UPS SCP's listeners and its event dispatcher
            # Under AINODE_MIN_FREE_BYTES the SCP refuses C-STORE (A700) and this says why.
            "disk": has_room(settings.data_dir, settings.min_free_bytes),
            "database": database_answers(engine),
            "broker": broker_answers(broker_url),
            "scheduler": scheduler.alive,
            "worker": all(worker.alive for worker in workers),  # analysis and delivery
            **({"requests": requests.alive} if requests is not None else {}),
        }

    app = create_app(
        settings,
        sessions,
        health=health,
        retry_job=JobRetry(ledger, outbox, queue),
        reanalyse_job=JobReanalysis(ledger, queue),
        record_action=action_recorder(trail),
        workitem_book=ups.book,  # UPS-RS and UPS DIMSE share one book, one event wake
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.http_bind,
            port=settings.http_port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    )
    started = False
    _stop_on_sigterm()
    try:
        retention.remove_empty_folders()  # before the worker and the SCP make folders
        for worker in workers:
            worker.start()
        scheduler.start()
        retention.start()  # its first sweep finishes what a crash left half deleted
        sweep_at_start(settings, sessions)  # what a crash left, before the SCP listens
        scp.start()
        ups.start()
        if requests is not None:  # after the SCP: a C-MOVE's instances arrive there
            requests.start()
        performer.start()  # only with AINODE_UPS_PULL_PROVIDERS
        trail.application_started("ainode serve")
        started = True
        log.info("web on http://%s:%s", settings.http_bind, settings.http_port)
        server.run()
    finally:
        performer.stop()
        if requests is not None:
            requests.stop()
        ups.stop()
        scp.stop()
        retention.stop()
        scheduler.stop()
        for worker in reversed(workers):
            worker.stop()
        if embedded is not None:
            embedded.stop()
        if started:
            trail.application_stopped("ainode serve")
        trail.close(timeout=5.0)  # the syslog messages still queued, within 5 s
        engine.dispose()
        log.info("node stopped")
