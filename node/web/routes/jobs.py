"""``/api/jobs``: jobs newest first, one job, and retrying a failed job.

Each result lists its outbox rows (destination, state, attempts, last error), so a
dead-lettered delivery shows as such. A retry is handed to the ``retry_job`` callable
the node supplied (its one job-state owner); this module only reads jobs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import Select

from node.db.models import Job, JobState, ResultObject, Series
from node.web.routes.deps import RetryJobDep, SessionDep
from node.web.routes.schemas import (
    DeliveryOut,
    ErrorOut,
    JobOut,
    ResultOut,
    RetryOut,
    StepOut,
    delivery_fields,
)

router = APIRouter(tags=["jobs"])


def _job_query() -> Select[tuple[Job]]:
    return select(Job).options(
        selectinload(Job.series).selectinload(Series.study),
        selectinload(Job.steps),
        selectinload(Job.results).selectinload(ResultObject.deliveries),
    )


def _job_out(job: Job) -> JobOut:
    latest = max((step.attempt for step in job.steps), default=None)
    return JobOut(
        id=job.id,
        study_instance_uid=job.series.study.study_instance_uid,
        series_instance_uid=job.series.series_instance_uid,
        modality=job.series.modality,
        series_description=job.series.series_description,
        model_name=job.model_name,
        model_version=job.model_version,
        state=job.state,
        error=job.error,
        attempts=job.attempts,
        created_at=job.created_at,
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        findings=job.findings,
        steps=[
            StepOut(
                attempt=step.attempt,
                name=step.name,
                state=step.state,
                started_at=step.started_at,
                seconds=step.seconds,
                detail=step.detail,
            )
            for step in job.steps
            if step.attempt == latest
        ],
        results=[
            ResultOut(
                kind=result.kind,
                sop_instance_uid=result.sop_instance_uid,
                delivered_at=result.delivered_at,
                delivery_error=result.delivery_error,
                deliveries=[DeliveryOut(**delivery_fields(row)) for row in result.deliveries],
            )
            for result in sorted(job.results, key=lambda result: result.id)
        ],
    )


def _load_job(session: Session, job_id: int) -> Job:
    job = session.scalars(_job_query().where(Job.id == job_id)).one_or_none()
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    return job


@router.get("/jobs")
def list_jobs(
    session: SessionDep,
    state: Annotated[list[JobState] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    """Jobs newest first; ``?state=failed`` (repeatable) keeps only those states."""
    query = _job_query().order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if state:
        query = query.where(Job.state.in_(state))
    return [_job_out(job) for job in session.scalars(query).all()]


@router.get("/jobs/{job_id}", responses={404: {"model": ErrorOut}})
def read_job(session: SessionDep, job_id: int) -> JobOut:
    return _job_out(_load_job(session, job_id))


@router.post(
    "/jobs/{job_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def retry_job(session: SessionDep, retry: RetryJobDep, job_id: int) -> RetryOut:
    """Retry a finished job; 409 with the reason when it cannot be now.

    A job whose deliveries were dead-lettered sends its results again; any other
    finished job is analysed again.
    """
    try:
        retry(job_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found") from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    # Read after the retry committed: this session has not started a transaction yet.
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    return RetryOut(id=job.id, state=job.state)
