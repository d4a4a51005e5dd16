"""Routing: which models apply to a complete series, and the jobs that follow.

A model applies when its manifest's selection accepts the series' attributes. Each
(series, model) gets one job; a series no model accepts is marked NO_MODEL with every
model's reason, so an operator sees why nothing ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.registry import ModelRegistry
from node.db.models import Instance, Job, Series, SeriesState, utcnow


@dataclass(frozen=True)
class RoutingDecision:
    series_id: int
    job_ids: list[int]
    reason: str  # why no model applies; empty when jobs were created


def route_series(session: Session, series: Series, registry: ModelRegistry) -> RoutingDecision:
    """Create the jobs for one complete series (inside the caller's transaction)."""
    instances = session.scalar(
        select(func.count(Instance.id)).where(Instance.series_pk == series.id)
    )
    refusals: list[str] = []
    jobs: list[Job] = []
    for package in registry.packages:
        manifest = package.manifest
        refusal = manifest.accepts.refusal(
            modality=series.modality,
            sop_class_uid=series.sop_class_uid,
            body_part_examined=series.body_part_examined,
            image_type=series.image_type,
            instances=instances or 0,
        )
        if refusal:
            refusals.append(f"{manifest.name}: {refusal}")
            continue
        job = Job(series=series, model_name=manifest.name, model_version=manifest.version)
        session.add(job)
        jobs.append(job)
    series.completed_at = utcnow()
    if jobs:
        series.state = SeriesState.ROUTED
        series.state_reason = ""
    else:
        series.state = SeriesState.NO_MODEL
        series.state_reason = (
            "no model accepts this series: " + "; ".join(refusals)
            if refusals
            else "no model is installed"
        )
    session.flush()
    return RoutingDecision(series.id, [job.id for job in jobs], series.state_reason)
