"""The Celery application, configured for long, idempotent analysis tasks."""

from __future__ import annotations

from celery import Celery

from node.jobs.contracts import ANALYZE_TASK, DELIVER_TASK, GPU_QUEUE, IO_QUEUE


def make_celery(broker_url: str, visibility_timeout: float) -> Celery:
    """The node's Celery app. ``visibility_timeout``: Redis re-delivers a message not
    acknowledged within it, so it should exceed the longest job (a job that outlives
    it anyway is not run twice: see ``JobLedger.start``)."""
    app = Celery("ainode", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # the database records every outcome
        # Tasks are idempotent (deterministic result UIDs), so a message is
        # acknowledged only after its work is done, and re-queued if the worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            # How often an idle worker looks for messages past their visibility
            # timeout (kombu's default sweep is about every 100 s): a tenth of the
            # timeout, between 1 and 10 s.
            "unacked_restore_interval": min(10.0, max(1.0, visibility_timeout / 10)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        task_routes={ANALYZE_TASK: {"queue": GPU_QUEUE}, DELIVER_TASK: {"queue": IO_QUEUE}},
        task_default_queue=GPU_QUEUE,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
