"""The Celery application, configured for long, idempotent analysis tasks taken in the
order of their priority (STAT first), and how a job's priority is written on Redis.

kombu's Redis transport emulates message priorities: a queue is one Redis list per
priority step (``queue`` itself for the first step, ``queue + sep + step`` for the
others); a message goes to the list of the highest step not above its ``priority``, and
a consumer's BRPOP names every list of its queues in step order, so Redis hands over
the lowest number first (the reverse of AMQP, where a higher number goes first). The
steps here are the UPS priorities' ranks: 0 STAT, 1 HIGH, 2 MEDIUM, 3 LOW. With
prefetch 1 and late acknowledgement a worker holds only the message it runs, so the
next one it takes is the most urgent waiting at that moment.
"""

from __future__ import annotations

from celery import Celery

from node.db.worklist import UpsPriority
from node.jobs.contracts import ANALYZE_TASK, DELIVER_TASK, GPU_QUEUE, IO_QUEUE

PRIORITY_STEPS = [priority.rank for priority in UpsPriority]  # [0, 1, 2, 3]
PRIORITY_SEP = "\x06\x16"  # kombu's default separator, named so the lists can be named


def message_priority(priority: UpsPriority) -> int:
    """The Celery ``priority`` of a job's messages on Redis (lower is taken first)."""
    return priority.rank


def broker_lists(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages, most urgent first."""
    return [f"{queue}{PRIORITY_SEP}{step}" if step else queue for step in PRIORITY_STEPS]


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
            # One list per UPS priority (module docstring); every process that sends
            # or consumes must name the same steps. A message put back after its
            # visibility timeout keeps its priority (it is in the message).
            # queue_order_strategy stays round robin: it orders queues within a step,
            # while the steps already come first across the queues a worker takes.
            "priority_steps": PRIORITY_STEPS,
            "sep": PRIORITY_SEP,
        },
        # A message sent without a priority (none of the node's) waits as MEDIUM.
        task_default_priority=message_priority(UpsPriority.MEDIUM),
        broker_connection_retry_on_startup=True,
        task_routes={ANALYZE_TASK: {"queue": GPU_QUEUE}, DELIVER_TASK: {"queue": IO_QUEUE}},
        task_default_queue=GPU_QUEUE,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
