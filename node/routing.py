"""Routing: which models apply to a complete series, and the jobs that follow.

A model applies when its manifest's selection accepts the series' attributes. Each
(series, model) gets one job. A multimodal model (``additional_inputs``) also needs,
for each further input, a complete series of the same study that its selection
accepts; whichever of those series completes last creates the job. A series that
leads to no job gets NO_MODEL with every model's reason, so an operator sees why
nothing ran.

Routing creates the jobs and returns a :class:`~node.series_state.RoutingVerdict`; it
never writes ``Series.state`` itself: :mod:`node.series_state` (the one writer) does.

While the node performs a requested workitem for the series' study
(:mod:`node.requests.request_link`), the jobs are that workitem's, of its requested model
only; :func:`route_request` gives such a workitem the jobs of the study's series that
were complete before it (no completion routes them again).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.manifest import ModelManifest, SeriesSelection
from models.registry import ModelRegistry
from node.db.models import Instance, Job, JobInput, Series, SeriesState, Study, utcnow
from node.db.worklist import Workitem
from node.priority import NO_RULES, JobPriorities
from node.requests.request_link import active_request, wanted
from node.series_state import INPUT_ONLY, RoutingVerdict
from node.ups.job_sync import for_job


def _refusal(session: Session, selection: SeriesSelection, series: Series) -> str | None:
    instances = session.scalar(
        select(func.count(Instance.id)).where(Instance.series_pk == series.id)
    )
    return selection.refusal(
        modality=series.modality,
        sop_class_uid=series.sop_class_uid,
        body_part_examined=series.body_part_examined,
        image_type=series.image_type,
        instances=instances or 0,
    )


def _complete_siblings(session: Session, series: Series) -> list[Series]:
    """The other complete series of the same study (oldest first)."""
    return list(
        session.scalars(
            select(Series)
            .where(
                Series.study_pk == series.study_pk,
                Series.id != series.id,
                Series.state != SeriesState.RECEIVING,
            )
            .order_by(Series.id)
        )
    )


def _find_inputs(
    session: Session, primary: Series, manifest: ModelManifest, candidates: list[Series]
) -> tuple[dict[str, Series], list[str]]:
    """A series for each additional input of ``manifest``, and the roles still missing."""
    chosen: dict[str, Series] = {}
    missing: list[str] = []
    for spec in manifest.additional_inputs:
        found = next(
            (
                s
                for s in candidates
                if s.id != primary.id
                and s.id not in {c.id for c in chosen.values()}
                and _refusal(session, spec.accepts, s) is None
            ),
            None,
        )
        if found is None:
            missing.append(spec.role)
        else:
            chosen[spec.role] = found
    return chosen, missing


def _has_job(session: Session, primary: Series, manifest: ModelManifest) -> bool:
    return (
        session.scalar(
            select(func.count(Job.id)).where(
                Job.series_pk == primary.id,
                Job.model_name == manifest.name,
                Job.model_version == manifest.version,
                Job.created_at >= (primary.completed_at or utcnow()),
            )
        )
        or 0
    ) > 0


def _create_job(
    session: Session,
    primary: Series,
    manifest: ModelManifest,
    inputs: dict[str, Series],
    priorities: JobPriorities,
    request: Workitem | None = None,
) -> Job:
    job = Job(series=primary, model_name=manifest.name, model_version=manifest.version)
    job.workitem = request  # a request's jobs are its own (node.requests.request_link)
    session.add(job)
    for role, series in inputs.items():
        session.add(JobInput(job=job, series=series, role=role))
    # Decided once, here (node.priority); every message of the job carries it.
    job.priority = priorities.of([primary, *inputs.values()], job.workitem)
    if job.workitem is None:  # every analysis is a workitem: the node's own (node.ups)
        for_job(session, job)
    return job


def route_series(
    session: Session,
    series: Series,
    registry: ModelRegistry,
    priorities: JobPriorities = NO_RULES,
) -> RoutingVerdict:
    """Create the jobs a newly complete series makes possible (in the caller's transaction),
    and say what the series' state becomes; the caller has it written by ``series_state``.
    ``priorities``: the settings' rules (``node.priority``) each new job's priority is
    decided by."""
    siblings = _complete_siblings(session, series)
    request = active_request(session, series.study)  # the node performs a request for it
    refusals: list[str] = []
    jobs: list[Job] = []
    used_as_input = False
    for package in registry.packages:
        manifest = package.manifest
        if not wanted(request, manifest.name):
            continue
        refusal = _refusal(session, manifest.accepts, series)
        if refusal is None:
            inputs, missing = _find_inputs(session, series, manifest, siblings)
            if missing:
                refusals.append(
                    f"{manifest.name}: waiting for a {', '.join(missing)} series in this study"
                )
            else:
                jobs.append(_create_job(session, series, manifest, inputs, priorities, request))
            continue
        # The series may be the further input a waiting primary series lacked.
        if any(_refusal(session, s.accepts, series) is None for s in manifest.additional_inputs):
            used_as_input = True
            for primary in siblings:
                if _refusal(session, manifest.accepts, primary) is not None:
                    continue
                if _has_job(session, primary, manifest):
                    continue
                inputs, missing = _find_inputs(session, primary, manifest, [*siblings, series])
                if not missing:
                    jobs.append(
                        _create_job(session, primary, manifest, inputs, priorities, request)
                    )
            continue
        refusals.append(f"{manifest.name}: {refusal}")
    if jobs or used_as_input:
        return RoutingVerdict(routed=True, reason="" if jobs else INPUT_ONLY, jobs=tuple(jobs))
    reason = (
        "no model accepts this series: " + "; ".join(refusals)
        if refusals
        else "no model is installed"
    )
    return RoutingVerdict(routed=False, reason=reason, jobs=())


@dataclass(frozen=True)
class RequestRouting:
    """The jobs a requested workitem got for series already complete, and why others
    got none."""

    jobs: tuple[Job, ...]
    refusals: tuple[str, ...]


def _has_request_job(
    session: Session, primary: Series, manifest: ModelManifest, request: Workitem
) -> bool:
    return (
        session.scalar(
            select(func.count(Job.id)).where(
                Job.series_pk == primary.id,
                Job.model_name == manifest.name,
                Job.model_version == manifest.version,
                Job.workitem_pk == request.id,
            )
        )
        or 0
    ) > 0


def route_request(
    session: Session,
    request: Workitem,
    registry: ModelRegistry,
    priorities: JobPriorities = NO_RULES,
) -> RequestRouting:
    """Create the jobs of ``request`` (a workitem the node performs for its study) for the
    study's complete series that have none of it yet: series held before the request,
    which no completion routes again. The same manifests decide as for a completing
    series; the caller records the verdict on each series (``series_state``)."""
    study = session.scalars(
        select(Study).where(Study.study_instance_uid == request.study_instance_uid)
    ).first()
    if study is None:
        return RequestRouting((), ("the node holds no instance of the study",))
    complete = list(
        session.scalars(
            select(Series)
            .where(Series.study_pk == study.id, Series.state != SeriesState.RECEIVING)
            .order_by(Series.id)
        )
    )
    jobs: list[Job] = []
    refusals: list[str] = []
    for series in complete:
        name = series.series_description or series.series_instance_uid
        for package in registry.packages:
            manifest = package.manifest
            if not wanted(request, manifest.name):
                continue
            refusal = _refusal(session, manifest.accepts, series)
            if refusal is not None:
                refusals.append(f"{name}: {manifest.name}: {refusal}")
                continue
            if _has_request_job(session, series, manifest, request):
                continue
            inputs, missing = _find_inputs(session, series, manifest, complete)
            if missing:
                refusals.append(f"{name}: {manifest.name}: no {', '.join(missing)} series")
                continue
            jobs.append(_create_job(session, series, manifest, inputs, priorities, request))
    return RequestRouting(tuple(jobs), tuple(refusals))
