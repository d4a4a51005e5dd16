"""The analysis task's work: take a job (``JobLedger.start``, which one worker wins),
analyse its series with the warm model, keep the results durably, plan them into the
outbox and queue their delivery.

Run by the ``ainode.analyze_series`` task of ``workers.tasks`` in a worker holding an
``AnalysisContext``. Idempotent: results have deterministic UIDs, a job another worker
runs or a finished job is left alone.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread, dcmwrite
from sqlalchemy import select

from node.db.models import Instance, Job, ResultKind, ResultObject
from node.jobs.heartbeat import JobHeartbeat
from node.jobs.ledger import NewResult
from workers.analysis_context import AnalysisContext
from workers.context import WorkerContext
from workers.errors import ANALYSIS_ERRORS, SeriesNotAnalysable
from workers.load.limits import DecodeLimits
from workers.pipeline import Analysis, analyze

log = logging.getLogger(__name__)


def run_analysis(ctx: WorkerContext, analysis: AnalysisContext, job_id: int) -> None:
    attempt = ctx.ledger.start(job_id, timedelta(seconds=ctx.settings.lost_worker_seconds))
    if attempt is None:
        log.info("job %s has nothing to do (finished, gone, or running elsewhere)", job_id)
        return
    with JobHeartbeat(ctx.ledger, job_id, ctx.settings.heartbeat_seconds):
        analyzed = _analyze_job(ctx, analysis, job_id, attempt)
    if analyzed:
        ctx.queue.send_delivery(job_id)


def _job_inputs(
    ctx: WorkerContext, analysis: AnalysisContext, job_id: int
) -> tuple[Job, list[Path], list[list[Path]]]:
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
        package = analysis.registry.get(job.model_name)
        roles = [s.role for s in package.manifest.additional_inputs]
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


def _keep_results(analysis: AnalysisContext, job_id: int, outcome: Analysis) -> list[NewResult]:
    kept = []
    for kind, dataset in outcome.objects:
        uid = str(dataset.SOPInstanceUID)
        relative = Path(f"{job_id}/{kind.lower()}-{uid}.dcm")
        buffer = BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        analysis.results.write(relative, buffer.getvalue())
        series = str(dataset.SeriesInstanceUID)  # for the job's workitem's outputs
        kept.append(NewResult(kind, str(dataset.SOPClassUID), uid, str(relative), series))
    return kept


def _analyze_job(ctx: WorkerContext, analysis: AnalysisContext, job_id: int, attempt: int) -> bool:
    """Analyse, encode and keep the results; False (and the job failed) on an error."""
    try:
        job, paths, additional = _job_inputs(ctx, analysis, job_id)
        package = analysis.package_for(job.model_name, job.model_version)

        def step(name: str):  # noqa: ANN202 - a context manager
            return ctx.ledger.step(job_id, attempt, name)

        overlay = any(d.takes(ResultKind.SC, job.model_name) for d in ctx.settings.all_destinations)
        # A KOS of the critical findings, only where a destination takes it (as the SC).
        key_objects = any(
            d.takes(ResultKind.KO, job.model_name) for d in ctx.settings.all_destinations
        )
        outcome = analyze(
            paths, package, analysis.device, analysis.networks, step, additional,
            overlay=overlay, key_objects=key_objects, supersedes=_superseded_reports(ctx, job),
            limits=DecodeLimits(ctx.settings.max_frame_bytes, ctx.settings.max_decoded_bytes),
            series=analysis.series,
        )  # fmt: skip
        with step("store"):
            kept = _keep_results(analysis, job_id, outcome)
        ctx.ledger.analyzed(job_id, outcome.findings, kept, ctx.settings.all_destinations)
    except ANALYSIS_ERRORS as exc:
        log.warning("job %s: %s", job_id, exc)
        ctx.ledger.fail(job_id, str(exc))
        return False
    except Exception as exc:
        log.exception("job %s failed", job_id)
        ctx.ledger.fail(job_id, f"internal error: {type(exc).__name__}: {exc}")
        return False
    return True
