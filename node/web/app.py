"""Assembles the FastAPI application from the settings, the session factory and two callables.

The web side reads the database and never changes job state itself: a retry goes
through ``retry_job``, which the caller wires to the node's one job-state owner, and
health comes from ``health``, which the caller wires to its probes of the SCP, the
database and the broker.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from node.settings import Settings
from node.web import metrics
from node.web.routes import dashboard, deliveries, healthz, jobs, node_info, studies
from node.web.routes.deps import HealthCheck, RetryJob, WebContext

STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["HealthCheck", "RetryJob", "STATIC_DIR", "create_app"]


def create_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    health: HealthCheck,
    retry_job: RetryJob,
) -> FastAPI:
    """Build the node's web application.

    Parameters
    ----------
    settings
        The node's settings (the dashboard shows the AE title, port and archive).
    sessions
        The node's one session factory; every request reads through a session from it.
    health
        Returns one boolean per part of the node, e.g. ``{"scp": True, "database": True,
        "broker": False}``. Called on every ``GET /healthz``; it may block briefly.
    retry_job
        Resets a failed job and re-enqueues it. Raises ``LookupError`` when the job does
        not exist and ``ValueError`` (the message is the reason) when it cannot be retried
        now.

    Returns
    -------
    FastAPI
        The application, with its own Prometheus registry.
    """
    app = FastAPI(
        title="ainode",
        summary="DICOM AI analysis node: studies, jobs, health and metrics",
        version="0.1.0",
    )
    app.state.context = WebContext(
        settings=settings,
        sessions=sessions,
        health=health,
        retry_job=retry_job,
        metrics_registry=metrics.make_registry(sessions),
    )
    app.include_router(healthz.router)
    app.include_router(metrics.router)
    app.include_router(node_info.router, prefix="/api")
    app.include_router(studies.router, prefix="/api")
    app.include_router(jobs.router, prefix="/api")
    app.include_router(deliveries.router, prefix="/api")
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
