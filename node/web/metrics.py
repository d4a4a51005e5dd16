"""``GET /metrics``: Prometheus gauges computed from the database at scrape time.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (no global registry),
holding one :class:`NodeStateCollector` that counts rows when scraped:

- ``ainode_up`` 1 while the web process answers;
- ``ainode_database_up`` 1 when the counts below could be read, else 0 (and they are left out);
- ``ainode_series{state}``, ``ainode_jobs{state}``: rows per state, every state listed;
- ``ainode_instances_total``: instances received;
- ``ainode_results{kind, delivered}``: result objects, delivered ``"true"`` (to every
  destination that takes them, as their outbox rows say) or ``"false"``;
- ``ainode_job_step_seconds{step, state}``: a summary (``_count``, ``_sum``) over finished
  steps (``done`` or ``failed``) that recorded their seconds; mean = sum / count;
- ``ainode_result_latency_seconds{model, destination}``: a histogram of the seconds from
  a job's last instance received to its results stored at a destination, one
  observation per job and destination once all its results are stored there
  (``node.web.result_latency``; buckets 0.5 s to 600 s).

A scraper reads it with ``Authorization: Bearer`` and ``AINODE_METRICS_TOKEN``; without
that token (or when none is set) only an admin principal may.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import TypeVar

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.utils import floatToGoString
from sqlalchemy import Select, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.auth.roles import Role
from node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    JobStep,
    ResultKind,
    ResultObject,
    Series,
    SeriesState,
    StepState,
)
from node.web.result_latency import result_latencies
from node.web.routes.deps import ContextDep, authenticate, bearer_token, require

log = logging.getLogger(__name__)

K = TypeVar("K")

router = APIRouter(tags=["metrics"])

LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
"""Upper bounds (s) of ``ainode_result_latency_seconds``: seconds on a GPU, a quiet
period on a CPU, minutes when something waits."""


def _counts(session: Session, query: Select[tuple[K, int]]) -> dict[K, int]:
    return {key: count for key, count in session.execute(query)}


class NodeStateCollector:
    """Counts the node's rows on every scrape; nothing is kept between scrapes."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from querying the database.
        return []

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("ainode_up", "1 while the node's web process answers", value=1)
        try:
            with self._sessions() as session:
                families = list(self._from_database(session))
        except SQLAlchemyError:
            log.exception("metrics: the database could not be read")
            yield GaugeMetricFamily(
                "ainode_database_up", "1 when the database could be read", value=0
            )
            return
        yield GaugeMetricFamily("ainode_database_up", "1 when the database could be read", value=1)
        yield from families

    def _from_database(self, session: Session) -> Iterator[Metric]:
        yield _series(session)
        yield _jobs(session)
        instances = session.scalar(select(func.count()).select_from(Instance)) or 0
        yield GaugeMetricFamily(
            "ainode_instances_total", "DICOM instances received", value=instances
        )
        yield _results(session)
        yield _deliveries(session)
        yield _step_seconds(session)
        yield _result_latency(session)


def _series(session: Session) -> Metric:
    family = GaugeMetricFamily("ainode_series", "Series per state", labels=["state"])
    counts = _counts(session, select(Series.state, func.count()).group_by(Series.state))
    for state in SeriesState:
        family.add_metric([state.value], counts.get(state, 0))
    return family


def _jobs(session: Session) -> Metric:
    family = GaugeMetricFamily("ainode_jobs", "Jobs per state", labels=["state"])
    counts = _counts(session, select(Job.state, func.count()).group_by(Job.state))
    for state in JobState:
        family.add_metric([state.value], counts.get(state, 0))
    return family


def _results(session: Session) -> Metric:
    family = GaugeMetricFamily(
        "ainode_results", "Result objects per kind and delivery", labels=["kind", "delivered"]
    )
    # count() skips NULLs, and the case is NULL for an object not yet delivered everywhere.
    by_kind = {
        str(kind): (total, delivered)
        for kind, total, delivered in session.execute(
            select(
                ResultObject.kind, func.count(), func.count(case((ResultObject.delivered, 1)))
            ).group_by(ResultObject.kind)
        )
    }
    for kind in sorted({str(k) for k in ResultKind} | set(by_kind)):
        total, delivered = by_kind.get(kind, (0, 0))
        family.add_metric([kind, "true"], delivered)
        family.add_metric([kind, "false"], total - delivered)
    return family


def _deliveries(session: Session) -> Metric:
    family = GaugeMetricFamily(
        "ainode_deliveries",
        "Outbox rows (result x destination) per destination and state; alert on dead",
        labels=["destination", "state"],
    )
    rows = session.execute(
        select(Delivery.destination, Delivery.state, func.count())
        .group_by(Delivery.destination, Delivery.state)
        .order_by(Delivery.destination)
    ).all()
    by_destination: dict[str, dict[DeliveryState, int]] = {}
    for destination, delivery_state, count in rows:
        by_destination.setdefault(destination, {})[delivery_state] = count
    for destination, states in by_destination.items():
        for delivery_state in DeliveryState:
            family.add_metric([destination, delivery_state.value], states.get(delivery_state, 0))
    return family


def _step_seconds(session: Session) -> Metric:
    family = SummaryMetricFamily(
        "ainode_job_step_seconds",
        "Seconds per finished pipeline step (mean = _sum / _count)",
        labels=["step", "state"],
    )
    rows = session.execute(
        select(JobStep.name, JobStep.state, func.count(), func.sum(JobStep.seconds))
        .where(JobStep.seconds.is_not(None), JobStep.state != StepState.RUNNING)
        .group_by(JobStep.name, JobStep.state)
        .order_by(JobStep.name, JobStep.state)
    )
    for name, step_state, count, total in rows:
        family.add_metric([name, step_state.value], count_value=count, sum_value=total or 0.0)
    return family


def _result_latency(session: Session) -> Metric:
    family = HistogramMetricFamily(
        "ainode_result_latency_seconds",
        "Seconds from a job's last instance received to its results stored at a destination",
        labels=["model", "destination"],
    )
    observed: dict[tuple[str, str], list[float]] = {}
    for latency in result_latencies(session):
        observed.setdefault((latency.model_name, latency.destination), []).append(latency.seconds)
    for labels, values in sorted(observed.items()):
        buckets = [
            (floatToGoString(bound), sum(value <= bound for value in values))
            for bound in LATENCY_BUCKETS
        ]
        buckets.append(("+Inf", len(values)))
        family.add_metric(list(labels), buckets=buckets, sum_value=sum(values))
    return family


def make_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """A registry of this app's own, holding the database collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeStateCollector(sessions))
    return registry


def _is_metrics_token(context: ContextDep, request: Request) -> bool:
    expected = context.settings.metrics_token
    if not expected:
        return False
    given = bearer_token(request)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@router.get("/metrics", response_class=Response)
def read_metrics(context: ContextDep, request: Request) -> Response:
    if not _is_metrics_token(context, request):
        try:
            principal = authenticate(request, context)
        except HTTPException as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="send AINODE_METRICS_TOKEN or an admin's API token as a bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            ) from exc
        require(Role.ADMIN)(principal, request)
    return Response(generate_latest(context.metrics_registry), media_type=CONTENT_TYPE_LATEST)
