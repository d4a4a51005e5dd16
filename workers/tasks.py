"""The Celery tasks: thin shells that take a job id, run plain functions, record state.

``analyze_series`` (gpu queue) loads, infers and encodes, writes the results durably
and plans them into the outbox, then queues ``deliver_results`` (io queue), which
sends what is due to each destination (``node.delivery.deliver``). Both are
idempotent: results have deterministic UIDs and a finished job is not run again.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from io import BytesIO
from pathlib import Path

from celery import Celery, Task
from pydicom import Dataset, dcmread, dcmwrite
from sqlalchemy import select

from node.db.models import Instance, Job, ResultKind, ResultObject
from node.delivery.deliver import deliver_due
from node.jobs.contracts import ANALYZE_TASK, DELIVER_TASK
from node.jobs.heartbeat import JobHeartbeat
from node.jobs.ledger import NewResult
from workers.context import WorkerContext
from workers.errors import ANALYSIS_ERRORS, ModelUnavailable, SeriesNotAnalysable
from workers.load.limits import DecodeLimits
from workers.pipeline import Analysis, analyze

log = logging.getLogger(__name__)


def _job_inputs(ctx: WorkerContext, job_id: int) -> tuple[Job, list[Path], list[list[Path]]]:
    """The job, its primary series' files, and each further input's files (by role)."""
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)

        def files(series_pk: int) -> list[Path]:
            rows = session.scalars(
                select(Instance.path).where(Instance.series_pk == series_pk).order_by(Instance.id)
            ).all()
            return [ctx.settings.spool_dir / path for path in rows]

        primary = files(job.series_pk)
        by_role = {item.role: files(item.series_pk) for item in job.inputs}
    try:
        roles = [s.role for s in ctx.registry.get(job.model_name).manifest.additional_inputs]
    except KeyError:
        roles = list(by_role)  # the model check that follows names the real problem
    missing = [role for role in roles if role not in by_role]
    if missing:
        raise SeriesNotAnalysable(f"the job has no {', '.join(missing)} series")
    return job, primary, [by_role[role] for role in roles]


def _superseded_reports(ctx: WorkerContext, job: Job) -> list[Dataset]:
    """The latest SR an earlier job of the same model wrote for the same series.

    New instances arriving for an analysed series make a new job; its report replaces
    this one (which in turn names the one before it, if any).
    """
    with ctx.sessions() as session:
        path = session.scalars(
            select(ResultObject.path)
            .join(Job)
            .where(
                Job.series_pk == job.series_pk,
                Job.model_name == job.model_name,
                Job.id < job.id,
                ResultObject.kind == ResultKind.SR,
            )
            .order_by(Job.id.desc())
            .limit(1)
        ).first()
    if path is None:
        return []
    try:
        return [dcmread(ctx.settings.results_dir / path, stop_before_pixels=True)]
    except OSError as exc:  # the earlier result was removed: report without the link
        log.warning("job %s: cannot read the report it supersedes: %s", job.id, exc)
        return []


def _keep_results(ctx: WorkerContext, job_id: int, analysis: Analysis) -> list[NewResult]:
    kept = []
    for kind, dataset in analysis.objects:
        uid = str(dataset.SOPInstanceUID)
        relative = Path(f"{job_id}/{kind.lower()}-{uid}.dcm")
        buffer = BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        ctx.results.write(relative, buffer.getvalue())
        kept.append(NewResult(kind, str(dataset.SOPClassUID), uid, str(relative)))
    return kept


def run_analysis(ctx: WorkerContext, job_id: int) -> None:
    attempt = ctx.ledger.start(job_id, timedelta(seconds=ctx.settings.lost_worker_seconds))
    if attempt is None:
        log.info("job %s has nothing to do (finished, gone, or running elsewhere)", job_id)
        return
    with JobHeartbeat(ctx.ledger, job_id, ctx.settings.heartbeat_seconds):
        analyzed = _analyze_job(ctx, job_id, attempt)
    if analyzed:
        ctx.queue.send_delivery(job_id)


def _analyze_job(ctx: WorkerContext, job_id: int, attempt: int) -> bool:
    """Analyse, encode and keep the results; False (and the job failed) on an error."""
    try:
        job, paths, additional = _job_inputs(ctx, job_id)
        try:
            package = ctx.registry.get(job.model_name)
        except KeyError:
            raise ModelUnavailable(
                f"model {job.model_name} is not installed on this worker"
            ) from None
        if package.manifest.version != job.model_version:
            raise ModelUnavailable(
                f"job wants {job.model_name} {job.model_version}, "
                f"this worker has {package.manifest.version}"
            )

        def step(name: str):  # noqa: ANN202 - a context manager
            return ctx.ledger.step(job_id, attempt, name)

        overlay = any(d.takes(ResultKind.SC, job.model_name) for d in ctx.settings.all_destinations)
        analysis = analyze(
            paths, package, ctx.device, ctx.cache, step, additional,
            overlay=overlay, supersedes=_superseded_reports(ctx, job),
            limits=DecodeLimits(ctx.settings.max_frame_bytes, ctx.settings.max_decoded_bytes),
        )  # fmt: skip
        with step("store"):
            kept = _keep_results(ctx, job_id, analysis)
        ctx.ledger.analyzed(job_id, analysis.findings, kept, ctx.settings.all_destinations)
    except ANALYSIS_ERRORS as exc:
        log.warning("job %s: %s", job_id, exc)
        ctx.ledger.fail(job_id, str(exc))
        return False
    except Exception as exc:
        log.exception("job %s failed", job_id)
        ctx.ledger.fail(job_id, f"internal error: {type(exc).__name__}: {exc}")
        return False
    return True


def register_tasks(app: Celery, ctx: WorkerContext) -> None:
    @app.task(name=ANALYZE_TASK, bind=True)
    def analyze_series(self: Task, job_id: int) -> None:
        run_analysis(ctx, job_id)

    @app.task(name=DELIVER_TASK, bind=True)
    def deliver_results(self: Task, job_id: int) -> None:
        # Attempts and backoff live in the outbox, not in Celery's retry counter: they
        # survive a broker that loses its messages and a node restart.
        wait = deliver_due(job_id, ctx.settings, ctx.outbox, ctx.ledger, ctx.results_audit)
        if wait is not None:
            ctx.queue.send_delivery(job_id, countdown=wait)

    _ = (analyze_series, deliver_results)  # registered on the app by the decorator
