"""``/api/jobs``: jobs newest first, one job, an operator's retry, an admin's re-analysis.

Each result lists its outbox rows (destination, state, attempts, last error), so a
dead-lettered delivery shows as such, and each job the retries and re-analyses it had
(who, when, why). A retry or re-analysis is handed to the callable the node supplied
(``node.jobs.retry``, which goes through the one job-state owner); this module only
reads jobs, and tells ``record_action`` who asked for what.

- ``POST /api/jobs/{id}/retry`` (operator): re-sends a job's failed or dead-lettered
  results; a job whose analysis failed is analysed again (it produced nothing that was
  sent). A job that succeeded is refused (409): analysing it again is a re-analysis.
- ``POST /api/jobs/{id}/reanalyse`` (admin, ``{"reason": "..."}``): analyses a
  finished job (succeeded or failed) again from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import Select

from node.auth.actions import ActionRecord
from node.auth.principal import Principal
from node.db.models import Job, JobState, ResultObject, Series
from node.web.routes.deps import (
    AdminDep,
    ContextDep,
    OperatorDep,
    SessionDep,
    WebContext,
    client_address,
)
from node.web.routes.schemas import ErrorOut, JobOut, ReanalyseIn, RetryIn, RetryOut

router = APIRouter(tags=["jobs"])

_REFUSALS = {
    403: {"model": ErrorOut},
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
}


def _job_query() -> Select[tuple[Job]]:
    return select(Job).options(
        selectinload(Job.series).selectinload(Series.study),
        selectinload(Job.steps),
        # A result's delivered_at and delivery_error are read from its deliveries:
        # loaded here in one query for every listed job, not one per result.
        selectinload(Job.results).selectinload(ResultObject.deliveries),
        selectinload(Job.actions),
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


def _act(
    context: WebContext,
    request: Request,
    principal: Principal,
    action: str,
    job_id: int,
    reason: str,
    run: Callable[[], None],
) -> None:
    """Run ``run()``, tell ``record_action`` how it went, map refusals to HTTP."""
    refusal: HTTPException | None = None
    error: Exception | None = None
    try:
        run()
    except LookupError:
        refusal = HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    except ValueError as exc:
        refusal = HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded, then raised as it came (a 500)
        error = exc
    why = f"refused: {refusal.detail}" if refusal else f"failed: {error}" if error else ""
    context.record_action(
        ActionRecord(
            action=action,
            actor=principal.name,
            actor_role=principal.role.value,
            succeeded=refusal is None and error is None,
            target=request.url.path,  # e.g. /api/jobs/12/retry
            reason="; ".join(part for part in (reason, why) if part),
            peer=client_address(request),
            provider=principal.provider,
        )
    )
    if error is not None:
        raise error
    if refusal is not None:
        raise refusal


def _state_after(session: Session, job_id: int) -> RetryOut:
    # Read after the action committed: this session has not started a transaction yet.
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    return RetryOut.model_validate(job)


@router.post("/jobs/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED, responses=_REFUSALS)
def retry_job(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    principal: OperatorDep,
    job_id: int,
    body: RetryIn | None = None,
) -> RetryOut:
    """Re-send a failed job's results (or analyse a job whose analysis failed); 409 with
    the reason when it cannot be now."""
    reason = body.reason.strip() if body else ""
    _act(
        context,
        request,
        principal,
        "job_retry",
        job_id,
        reason,
        lambda: context.retry_job(job_id, principal, reason),
    )
    return _state_after(session, job_id)


@router.post("/jobs/{job_id}/reanalyse", status_code=status.HTTP_202_ACCEPTED, responses=_REFUSALS)
def reanalyse_job(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    principal: AdminDep,
    job_id: int,
    body: ReanalyseIn,
) -> RetryOut:
    """Analyse a finished job again (admin); the reason is kept with the job."""
    reanalyse = context.reanalyse_job
    if reanalyse is None:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, detail="re-analysis is not wired")
    _act(
        context,
        request,
        principal,
        "job_reanalyse",
        job_id,
        body.reason,
        lambda: reanalyse(job_id, principal, body.reason),
    )
    return _state_after(session, job_id)
