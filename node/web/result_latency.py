"""Result latency: seconds from a job's last instance received to its results stored.

The one definition the metrics (``ainode_result_latency_seconds``) and each study's
timeline share. For one job and one destination, the latency is measured from the
last instance received of every series the job reads (its primary series and, for a
multimodal model, its further inputs: ``Series.last_received_at``) to the moment the
last of the job's results for that destination was stored there (``Delivery.stored_at``,
the archive's C-STORE or STOW-RS success; storage commitment may come later). A pair
counts only once every one of its outbox rows is stored (``committing`` or
``delivered``). Everything is read from the database, because deliveries settle in the
worker processes while the web answers in ``ainode serve``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.db.models import Delivery, DeliveryState, Job, JobInput, ResultObject, Series

STORED_STATES = frozenset({DeliveryState.COMMITTING, DeliveryState.DELIVERED})
"""Outbox states whose object the destination holds (``stored_at`` set)."""


@dataclass(frozen=True)
class OutboxStamp:
    """What the latency needs of one outbox row."""

    destination: str
    state: DeliveryState
    stored_at: datetime | None


@dataclass(frozen=True)
class ResultLatency:
    """One observation: a job's results stored at one destination."""

    job_id: int
    model_name: str
    destination: str
    seconds: float


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def stored_latencies(last_received: datetime, rows: Iterable[OutboxStamp]) -> dict[str, float]:
    """Seconds from ``last_received`` to the last row stored, per destination whose rows
    are all stored; a destination with a row still on its way is left out.

    A negative span (instances arrived again after the results were stored, and the
    series was not analysed again) is no observation either.
    """
    by_destination: dict[str, list[OutboxStamp]] = {}
    for row in rows:
        by_destination.setdefault(row.destination, []).append(row)
    latencies: dict[str, float] = {}
    for destination, stamps in by_destination.items():
        if any(s.state not in STORED_STATES or s.stored_at is None for s in stamps):
            continue
        stored = max(as_utc(s.stored_at) for s in stamps if s.stored_at is not None)
        seconds = (stored - as_utc(last_received)).total_seconds()
        if seconds >= 0:
            latencies[destination] = seconds
    return latencies


def _last_received_of_inputs(session: Session) -> dict[int, datetime]:
    """A multimodal job's further inputs: their latest last instance, per job."""
    rows = session.execute(
        select(JobInput.job_pk, func.max(Series.last_received_at))
        .join(Series, Series.id == JobInput.series_pk)
        .group_by(JobInput.job_pk)
    )
    return {job_id: as_utc(moment) for job_id, moment in rows if moment is not None}


def result_latencies(session: Session) -> Iterator[ResultLatency]:
    """Every (job, destination) whose results are all stored there, with its latency."""
    rows = session.execute(
        select(
            Job.id,
            Job.model_name,
            Series.last_received_at,
            Delivery.destination,
            Delivery.state,
            Delivery.stored_at,
        )
        .join(Series, Series.id == Job.series_pk)
        .join(ResultObject, ResultObject.job_pk == Job.id)
        .join(Delivery, Delivery.result_pk == ResultObject.id)
        .order_by(Job.id)
    )
    jobs: dict[int, tuple[str, datetime, list[OutboxStamp]]] = {}
    for job_id, model_name, last_received, destination, state, stored_at in rows:
        entry = jobs.setdefault(job_id, (model_name, as_utc(last_received), []))
        entry[2].append(OutboxStamp(destination, state, stored_at))
    inputs = _last_received_of_inputs(session) if jobs else {}
    for job_id, (model_name, last_received, stamps) in jobs.items():
        if job_id in inputs:
            last_received = max(last_received, inputs[job_id])
        for destination, seconds in stored_latencies(last_received, stamps).items():
            yield ResultLatency(job_id, model_name, destination, seconds)
