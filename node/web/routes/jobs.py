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
from node.web.routes.schemas import ErrorOut, JobOut, RetryOut

router = APIRouter(tags=["jobs"])


def _job_query() -> Select[tuple[Job]]:
    return select(Job).options(
        selectinload(Job.series).selectinload(Series.study),
        selectinload(Job.steps),
        # A result's delivered_at and delivery_error are read from its deliveries:
        # loaded here in one query for every listed job, not one per result.
        selectinload(Job.results).selectinload(ResultObject.deliveries),
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
    return [JobOut.model_validate(job) for job in session.scalars(query).all()]


@router.get("/jobs/{job_id}", responses={404: {"model": ErrorOut}})
def read_job(session: SessionDep, job_id: int) -> JobOut:
    return JobOut.model_validate(_load_job(session, job_id))


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
    return RetryOut.model_validate(job)
