"""Assembles the FastAPI application from the settings, the session factory and callables.

The web side reads the database and never changes job state itself: a retry goes
through ``retry_job`` and a re-analysis through ``reanalyse_job``, which the caller wires
to the node's one job-state owner; health comes from ``health``, which the caller wires
to its probes of the SCP, the database and the broker; sign-ins and operator actions go
to ``record_action`` (the log by default; the node's audit trail where it is wired).

Every route needs a principal (``node.web.routes.deps``) except ``/healthz``, the
sign-in pages (the form, and OpenID Connect's when it is on), and ``/static`` (the
dashboard's code and style, no data); ``/metrics`` takes its own token. Around them
all: the Host allow-list and the security headers (``node.web.hardening``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from node.auth.accounts import AccountStore
from node.auth.actions import RecordAction, log_action
from node.auth.roles import IdentifierPolicy, Role
from node.auth.sessions import SessionSigner, session_key
from node.auth.tokens import TokenStore
from node.settings import Settings
from node.ups.book import WorkitemBook
from node.web import metrics
from node.web.hardening import HostAllowList, SecurityHeaders
from node.web.routes import (
    acknowledgements,
    apidocs,
    audit,
    dashboard,
    deliveries,
    healthz,
    jobs,
    node_info,
    reading_worklist,
    signin,
    signin_oidc,
    studies,
    timeline,
    workitems,
)
from node.web.routes.deps import HealthCheck, ReanalyseJob, RetryJob, WebContext, require

STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["HealthCheck", "ReanalyseJob", "RetryJob", "STATIC_DIR", "create_app"]


def create_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    health: HealthCheck,
    retry_job: RetryJob,
    reanalyse_job: ReanalyseJob | None = None,
    record_action: RecordAction = log_action,
    workitem_book: WorkitemBook | None = None,
) -> FastAPI:
    """Build the node's web application.

    Parameters
    ----------
    settings
        The node's settings (identity and destinations shown, hosts allowed, session
        lifetime and key, who sees patient identifiers, the metrics token).
    sessions
        The node's one session factory; every request reads through a session from it,
        and the accounts and API tokens are read from it.
    health
        Returns one boolean per part of the node, e.g. ``{"scp": True, "database": True,
        "broker": False}``. Called on every ``GET /healthz``; it may block briefly.
    retry_job
        ``retry_job(job_id, principal, note)``: re-sends a failed job's results, or analyses a
        job whose analysis failed. Raises ``LookupError`` when the job does not exist
        and ``ValueError`` (the message is the reason) when it cannot be retried now.
    reanalyse_job
        ``reanalyse_job(job_id, principal, reason)``: analyses a finished job again;
        errors as ``retry_job``. Without it, a re-analysis answers 501.
    record_action
        Told of every sign-in (and failed one), sign-out, retry, re-analysis and
        acknowledgement of a critical finding.
    workitem_book
        The workitem book UPS-RS (``/dicom-web``) serves: the node's, whose commits wake
        its DIMSE event dispatcher; None: one of the web's own.

    Returns
    -------
    FastAPI
        The application, with its own Prometheus registry.
    """
    app = FastAPI(
        title="ainode",
        summary="DICOM AI analysis node: studies, jobs, health and metrics",
        version="0.1.0",
        # Served by node.web.routes.apidocs, to admins only and without a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.context = WebContext(
        settings=settings,
        sessions=sessions,
        health=health,
        retry_job=retry_job,
        reanalyse_job=reanalyse_job,
        record_action=record_action,
        metrics_registry=metrics.make_registry(sessions),
        accounts=AccountStore(sessions),
        tokens=TokenStore(sessions),
        signer=SessionSigner(
            session_key(settings.web_session_secret, settings.data_dir),
            settings.web_session_seconds,
        ),
        identifiers=IdentifierPolicy.from_names(settings.phi_roles),
    )
    signed_in = [Depends(require(Role.VIEWER))]
    app.include_router(healthz.router)
    app.include_router(metrics.router)
    app.include_router(signin.router)
    if settings.oidc_issuer is not None:  # sign-in through the hospital's OpenID provider
        app.include_router(signin_oidc.router_for(settings))
    app.include_router(apidocs.router)
    app.include_router(node_info.router, prefix="/api", dependencies=signed_in)
    app.include_router(studies.router, prefix="/api", dependencies=signed_in)
    app.include_router(timeline.router, prefix="/api", dependencies=signed_in)
    app.include_router(jobs.router, prefix="/api", dependencies=signed_in)
    app.include_router(deliveries.router, prefix="/api", dependencies=signed_in)
    app.include_router(reading_worklist.router, prefix="/api", dependencies=signed_in)
    app.include_router(acknowledgements.router, prefix="/api", dependencies=signed_in)
    app.include_router(audit.router, prefix="/api", dependencies=[Depends(require(Role.ADMIN))])
    app.include_router(dashboard.router)
    workitems.attach(app, settings, workitem_book or WorkitemBook(sessions))  # /dicom-web
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # The last added runs first: the Host check before anything, the headers on every
    # answer (the Host check's 400 included).
    app.add_middleware(HostAllowList, allowed=settings.effective_allowed_hosts)
    app.add_middleware(SecurityHeaders)
    return app
