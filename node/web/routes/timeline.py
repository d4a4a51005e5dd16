"""``GET /api/studies/{study_uid}/timeline``: what happened to a study, and when.

Per series, in time order: its first and last instance received and when it counted as
complete (and why: ``Series.completed_by``); per job on it: queued, each pipeline step
of every attempt (its start and seconds), each try to send a result to a destination
(stored or failed), the archive's storage commitment, each result delivered, the
operators' retries and re-analyses, and the job's end. Each event carries its offset
from the study's first instance received, and each job its latency per destination
(``node.web.result_latency``: last instance received to every result stored there), so
the dashboard can draw the stages to scale.

Read from the database only (the worker processes write the steps and the outbox);
patient name, patient ID and accession number are masked for roles that may not see
them, as ``/api/studies`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from node.db.models import Delivery, Instance, Job, JobInput, ResultObject, Series, Study
from node.web.result_latency import OutboxStamp, as_utc, stored_latencies
from node.web.routes.deps import ContextDep, SessionDep, ViewerDep
from node.web.routes.schemas import (
    ErrorOut,
    JobTimelineOut,
    PatientOut,
    SeriesTimelineOut,
    StudyTimelineOut,
    TimelineEventOut,
    TimelineKind,
)

router = APIRouter(tags=["studies"])

_ATTEMPT_KINDS = {
    "stored": TimelineKind.STORED,
    "committed": TimelineKind.COMMITTED,
    "failed": TimelineKind.FAILED,
}
_RANK = {kind: rank for rank, kind in enumerate(TimelineKind)}


class _Events:
    """Events of one series or job, offset from the study's start, sorted when read."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.items: list[TimelineEventOut] = []

    def add(self, kind: TimelineKind, at: datetime | None, **fields: object) -> None:
        if at is None:
            return
        moment = as_utc(at)
        offset = (moment - self.start).total_seconds()
        self.items.append(
            TimelineEventOut(kind=kind, at=moment, offset_seconds=offset, **fields)  # type: ignore[arg-type]
        )

    def sorted(self) -> list[TimelineEventOut]:
        # Ties (a step and the queue in the same instant) read in the order of the flow.
        order = sorted(enumerate(self.items), key=lambda p: (p[1].at, _RANK[p[1].kind], p[0]))
        return [event for _, event in order]


def _load_study(session: Session, study_uid: str) -> Study:
    job_rows = selectinload(Study.series).selectinload(Series.jobs)
    study = session.scalars(
        select(Study)
        .where(Study.study_instance_uid == study_uid)
        .options(
            selectinload(Study.patient),
            job_rows.selectinload(Job.steps),
            job_rows.selectinload(Job.actions),
            job_rows.selectinload(Job.inputs).selectinload(JobInput.series),
            job_rows.selectinload(Job.results)
            .selectinload(ResultObject.deliveries)
            .selectinload(Delivery.history),
        )
    ).one_or_none()
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"study {study_uid} not found")
    return study


def _first_received(session: Session, series: Sequence[Series]) -> dict[int, tuple[datetime, int]]:
    """Per series: its first instance's arrival and how many instances it holds."""
    if not series:
        return {}
    rows = session.execute(
        select(Instance.series_pk, func.min(Instance.received_at), func.count())
        .where(Instance.series_pk.in_([s.id for s in series]))
        .group_by(Instance.series_pk)
    )
    return {pk: (as_utc(first), count) for pk, first, count in rows}


def _job_timeline(job: Job, start: datetime) -> JobTimelineOut:
    events = _Events(start)
    events.add(TimelineKind.QUEUED, job.created_at)
    for step in job.steps:
        events.add(
            TimelineKind.STEP,
            step.started_at,
            name=step.name,
            state=step.state.value,
            seconds=step.seconds,
            attempt=step.attempt,
            detail=step.detail,
        )
    stamps: list[OutboxStamp] = []
    for result in job.results:
        for row in result.deliveries:
            stamps.append(OutboxStamp(row.destination, row.state, row.stored_at))
            for attempt in row.history:
                events.add(
                    _ATTEMPT_KINDS.get(attempt.outcome, TimelineKind.FAILED),
                    attempt.at,
                    name=row.destination,
                    state=attempt.outcome,
                    attempt=attempt.number,
                    result_kind=result.kind,
                    detail=attempt.detail,
                )
            events.add(
                TimelineKind.DELIVERED,
                row.delivered_at,
                name=row.destination,
                result_kind=result.kind,
            )
    for action in job.actions:
        events.add(
            TimelineKind.ACTION,
            action.at,
            name=action.action,
            detail="; ".join(p for p in (f"by {action.actor}", action.reason, action.outcome) if p),
        )
    events.add(TimelineKind.FINISHED, job.finished_at, state=job.state.value, detail=job.error)
    read = [job.series.last_received_at, *(i.series.last_received_at for i in job.inputs)]
    last_received = max(as_utc(moment) for moment in read)
    return JobTimelineOut(
        id=job.id,
        model_name=job.model_name,
        model_version=job.model_version,
        state=job.state,
        latency_seconds=stored_latencies(last_received, stamps),
        events=events.sorted(),
    )


def _series_timeline(
    series: Series, start: datetime, received: tuple[datetime, int] | None
) -> SeriesTimelineOut:
    events = _Events(start)
    first, count = received if received is not None else (None, 0)
    events.add(TimelineKind.RECEIVED_FIRST, first)
    events.add(TimelineKind.RECEIVED_LAST, series.last_received_at, detail=f"{count} in all")
    # detail: why it counted as complete (its evidence, or the quiet period)
    events.add(
        TimelineKind.COMPLETE,
        series.completed_at,
        state=series.state.value,
        detail=series.completed_by,
    )
    return SeriesTimelineOut(
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        modality=series.modality,
        description=series.series_description,
        state=series.state,
        instances=count,
        events=events.sorted(),
        jobs=[_job_timeline(job, start) for job in series.jobs],
    )


def _start(study: Study, firsts: Iterable[tuple[datetime, int]]) -> datetime:
    moments = [first for first, _ in firsts]
    return min(moments) if moments else as_utc(study.first_received_at)


@router.get("/studies/{study_uid}/timeline", responses={404: {"model": ErrorOut}})
def read_timeline(
    study_uid: str, session: SessionDep, context: ContextDep, principal: ViewerDep
) -> StudyTimelineOut:
    """The study's series and jobs as events in time order, offsets from its first
    instance received."""
    study = _load_study(session, study_uid)
    received = _first_received(session, study.series)
    start = _start(study, received.values())
    timeline = StudyTimelineOut(
        study_instance_uid=study.study_instance_uid,
        study_date=study.study_date,
        accession_number=study.accession_number,
        description=study.study_description,
        patient=PatientOut.model_validate(study.patient),
        started_at=start,
        series=[_series_timeline(s, start, received.get(s.id)) for s in study.series],
    )
    if context.identifiers.may_see(principal.role):
        return timeline
    return timeline.masked()
