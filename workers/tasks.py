"""The Celery tasks: thin shells that take a job id, run plain functions, record state.

``analyze_series`` (gpu queue) loads, infers and encodes, writes the results durably
and plans them into the outbox, then queues ``deliver_results`` (io queue), which
sends what is due to each destination (``node.delivery.deliver``). Both are
idempotent: results have deterministic UIDs and a finished job is not run again.

A worker registers the tasks of the queues it takes: the analysis task only where an
``AnalysisContext`` was built (its module brings torch), so a delivery worker imports
no torch and loads no model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Celery, Task

from node.delivery.deliver import deliver_due
from node.jobs.contracts import ANALYZE_TASK, DELIVER_TASK
from workers.context import WorkerContext

if TYPE_CHECKING:
    from workers.analysis_context import AnalysisContext


def register_tasks(app: Celery, ctx: WorkerContext, analysis: AnalysisContext | None) -> None:
    """Register the delivery task, and the analysis task when ``analysis`` is given."""
    if analysis is not None:
        from workers.analysis_task import run_analysis  # torch: analysis workers only

        @app.task(name=ANALYZE_TASK, bind=True)
        def analyze_series(self: Task, job_id: int) -> None:
            run_analysis(ctx, analysis, job_id)

        _ = analyze_series  # registered on the app by the decorator

    @app.task(name=DELIVER_TASK, bind=True)
    def deliver_results(self: Task, job_id: int) -> None:
        # Attempts and backoff live in the outbox, not in Celery's retry counter: they
        # survive a broker that loses its messages and a node restart.
        wait = deliver_due(job_id, ctx.settings, ctx.outbox, ctx.ledger, ctx.results_audit)
        if wait is not None:
            ctx.queue.send_delivery(job_id, countdown=wait)

    _ = deliver_results
