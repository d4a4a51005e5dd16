"""What a route may depend on, as types: ``SessionDep``, ``HealthDep``, ``RetryJobDep``.

The objects behind them live in one :class:`WebContext` on ``app.state``, put there by
``create_app``; routes never reach for globals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from node.settings import Settings

HealthCheck = Callable[[], dict[str, bool]]
"""Returns one boolean per part of the node (``scp``, ``database``, ``broker``...)."""

RetryJob = Callable[[int], None]
"""Resets and re-enqueues a job; ``LookupError`` if absent, ``ValueError`` if not now."""


@dataclass(frozen=True)
class WebContext:
    """Everything the routes need, built once by ``create_app``."""

    settings: Settings
    sessions: sessionmaker[Session]
    health: HealthCheck
    retry_job: RetryJob
    metrics_registry: CollectorRegistry


def get_context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


ContextDep = Annotated[WebContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """A read session for one request, closed (and rolled back) when the request ends."""
    with context.sessions() as session:
        yield session


def get_health(context: ContextDep) -> HealthCheck:
    return context.health


def get_retry_job(context: ContextDep) -> RetryJob:
    return context.retry_job


def get_settings(context: ContextDep) -> Settings:
    return context.settings


SessionDep = Annotated[Session, Depends(get_session)]
HealthDep = Annotated[HealthCheck, Depends(get_health)]
RetryJobDep = Annotated[RetryJob, Depends(get_retry_job)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
