"""``GET /api/worklist``: the reading room's worklist; ``GET /api/jobs/{id}/thumbnail``.

One row per study the node has a job for: the patient (masked as ``/api/studies``
masks it), accession, modalities, when it came, its urgency, each job's model, state
and findings in words, its critical findings with their acknowledgement, and the
thumbnail of its overlay.

Order: studies with a critical finding nobody acknowledged first; then by urgency, the
highest of the study's jobs' priorities (``Job.priority``) and its critical findings'
urgencies (STAT, HIGH, MEDIUM, LOW); then the oldest first (its first instance
received). Filters choose studies: ``modality`` (one of its series'), ``model`` and
``state`` (one of its jobs'); a chosen study's row shows all its jobs. The order and
the page are computed by the database, so a page costs the same however long the list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy import Row, and_, case, func, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import Subquery

from models.finding_words import finding_lines
from node.db.declarative import utcnow
from node.db.findings import CriticalFinding
from node.db.models import Job, JobState, ResultKind, ResultObject, Series, Study
from node.db.worklist import UpsPriority
from node.web.routes.deps import ContextDep, SessionDep, ViewerDep
from node.web.routes.reading_worklist_schemas import (
    CriticalFindingOut,
    WorklistJobOut,
    WorklistPageOut,
    WorklistRowOut,
)
from node.web.routes.schemas import ErrorOut, PatientOut
from node.web.thumbnail import THUMBNAIL_PIXELS, ThumbnailError, middle, overlay_thumbnail

router = APIRouter(tags=["worklist"])

PAGE_SIZE = 25
_PRIORITIES = list(UpsPriority)  # by rank: STAT first


def _ranked(modality: str | None, model: str | None, state: JobState | None) -> Subquery:
    """Per chosen study: its urgency's rank and how many critical findings are open."""
    job_rank = func.min(
        case({p: p.rank for p in UpsPriority}, value=Job.priority, else_=UpsPriority.MEDIUM.rank)
    )
    # NULL where the study has no critical finding (or one of an unknown urgency).
    finding_rank = func.min(
        case(*[(CriticalFinding.urgency == p.value, p.rank) for p in UpsPriority], else_=None)
    )
    unacknowledged = and_(
        CriticalFinding.id.is_not(None), CriticalFinding.acknowledged_at.is_(None)
    )
    query = (
        select(
            Study.id.label("study_pk"),
            Study.first_received_at.label("received_at"),
            # A comparison with NULL is not true: no finding leaves the jobs' rank.
            case((finding_rank < job_rank, finding_rank), else_=job_rank).label("rank"),
            func.sum(case((unacknowledged, 1), else_=0)).label("open"),
        )
        .join(Series, Series.study_pk == Study.id)
        .join(Job, Job.series_pk == Series.id)
        .outerjoin(CriticalFinding, CriticalFinding.job_pk == Job.id)
        .group_by(Study.id, Study.first_received_at)
    )
    if modality:
        query = query.where(
            Study.id.in_(select(Series.study_pk).where(Series.modality == modality))
        )
    jobs_of_study = select(Series.study_pk).join(Job, Job.series_pk == Series.id)
    if model:
        query = query.where(Study.id.in_(jobs_of_study.where(Job.model_name == model)))
    if state:
        query = query.where(Study.id.in_(jobs_of_study.where(Job.state == state)))
    return query.subquery()


@router.get("/worklist")
def read_worklist(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    principal: ViewerDep,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    model: Annotated[str | None, Query(max_length=64)] = None,
    state: JobState | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
) -> WorklistPageOut:
    """A page of the worklist, most urgent first (see the module's docstring)."""
    ranked = _ranked(modality, model, state)
    total = session.scalar(select(func.count()).select_from(ranked)) or 0
    page = session.execute(
        select(ranked)
        .order_by(
            case((ranked.c.open > 0, 0), else_=1),
            ranked.c.rank,
            ranked.c.received_at,
            ranked.c.study_pk,
        )
        .offset(offset)
        .limit(limit)
    ).all()
    rows = _rows(session, request, page)
    if not context.identifiers.may_see(principal.role):
        rows = [row.masked() for row in rows]
    return WorklistPageOut(total=total, offset=offset, limit=limit, rows=rows)


def _rows(session: Session, request: Request, page: Sequence[Row[Any]]) -> list[WorklistRowOut]:
    """The page's studies as rows, in the page's order: six queries, whatever its length."""
    pks = [entry.study_pk for entry in page]
    studies = {
        study.id: study
        for study in session.scalars(
            select(Study)
            .where(Study.id.in_(pks))
            .options(
                selectinload(Study.patient), selectinload(Study.series).selectinload(Series.jobs)
            )
        )
    }
    job_ids = [
        job.id for study in studies.values() for series in study.series for job in series.jobs
    ]
    critical: dict[int, list[CriticalFinding]] = defaultdict(list)
    for finding in session.scalars(
        select(CriticalFinding)
        .where(CriticalFinding.job_pk.in_(job_ids))
        .order_by(CriticalFinding.detected_at, CriticalFinding.id)
    ):
        critical[finding.job_pk].append(finding)
    with_overlay = set(
        session.scalars(
            select(ResultObject.job_pk)
            .where(ResultObject.job_pk.in_(job_ids), ResultObject.kind == ResultKind.SC)
            .distinct()
        )
    )
    now = utcnow()
    rows = []
    for entry in page:
        study = studies[entry.study_pk]
        jobs = sorted((job for series in study.series for job in series.jobs), key=lambda j: j.id)
        shown = [
            _job(job, critical[job.id], _thumbnail_url(request, job.id, with_overlay))
            for job in jobs
        ]
        received = _utc(study.first_received_at)
        rows.append(
            WorklistRowOut(
                study_instance_uid=study.study_instance_uid,
                patient=PatientOut.model_validate(study.patient),
                accession_number=study.accession_number,
                study_date=study.study_date,
                description=study.study_description,
                modalities=list(dict.fromkeys(s.modality for s in study.series if s.modality)),
                received_at=received,
                age_seconds=round((now - received).total_seconds(), 1),
                urgency=_PRIORITIES[int(entry.rank)],
                unacknowledged_critical=int(entry.open),
                thumbnail=_most_relevant_thumbnail(shown),
                jobs=shown,
            )
        )
    return rows


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _job(job: Job, critical: list[CriticalFinding], thumbnail: str | None) -> WorklistJobOut:
    return WorklistJobOut(
        id=job.id,
        model_name=job.model_name,
        model_version=job.model_version,
        state=job.state,
        priority=job.priority,
        findings=finding_lines(job.findings),
        thumbnail=thumbnail,
        critical_findings=[CriticalFindingOut.model_validate(f) for f in critical],
    )


def _thumbnail_url(request: Request, job_id: int, with_overlay: set[int]) -> str | None:
    if job_id not in with_overlay:
        return None
    return request.url_for("job_thumbnail", job_id=job_id).path


def _most_relevant_thumbnail(jobs: list[WorklistJobOut]) -> str | None:
    """The thumbnail of the job with an open critical finding, else any critical finding,
    else the most urgent job, else the first."""

    def relevance(job: WorklistJobOut) -> tuple[bool, bool, int, int]:
        findings = job.critical_findings
        return (
            not any(not f.acknowledged for f in findings),
            not findings,
            job.priority.rank,
            job.id,
        )

    with_thumbnail = sorted((job for job in jobs if job.thumbnail), key=relevance)
    return with_thumbnail[0].thumbnail if with_thumbnail else None


@router.get(
    "/jobs/{job_id}/thumbnail",
    name="job_thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}},
)
def job_thumbnail(
    session: SessionDep,
    context: ContextDep,
    job_id: int,
    size: Annotated[int, Query(ge=32, le=512)] = THUMBNAIL_PIXELS,
) -> Response:
    """A PNG of the job's overlay (its middle picture), at most ``size`` pixels a side;
    404 when the job has none."""
    paths = session.scalars(
        select(ResultObject.path)
        .where(ResultObject.job_pk == job_id, ResultObject.kind == ResultKind.SC)
        .order_by(ResultObject.id)
    ).all()
    if not paths:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} has no overlay")
    try:
        png = overlay_thumbnail(context.settings.results_dir / middle(paths), size)
    except ThumbnailError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    return Response(png, media_type="image/png")
