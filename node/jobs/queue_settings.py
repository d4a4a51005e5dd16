"""The settings of the job queue (``AINODE_RECONCILE_SECONDS``, ``AINODE_HEARTBEAT_SECONDS``,
``AINODE_LOST_WORKER_SECONDS``, ``AINODE_MAX_JOB_ATTEMPTS``,
``AINODE_VISIBILITY_TIMEOUT_SECONDS``).

They are fields of the node's one ``node.settings.Settings`` (which takes them from
this class, as a base), read, merged and checked with every other setting at start-up.
The scheduler's reconciler re-sends what the broker lost (``node.scheduler``), a worker
renews the job it runs (``node.jobs.heartbeat``), the ledger gives up a job whose worker
keeps being lost (``node.jobs.ledger``), and the Celery app asks Redis to re-deliver an
unacknowledged message (``node.jobs.celery_app``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class QueueSettings(BaseModel):
    """When a queued or running job counts as lost, and what happens to it then."""

    reconcile_seconds: float = Field(
        default=120.0, gt=0, description="a job queued this long without starting is re-sent"
    )
    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="how often a worker renews the job it runs"
    )
    lost_worker_seconds: float = Field(
        default=60.0, gt=0, description="a running job not renewed this long is run again"
    )
    max_job_attempts: int = Field(
        default=3, ge=1, description="a job whose worker is lost this many times in a row fails"
    )
    visibility_timeout_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="the broker re-delivers an unacknowledged job after this; above the longest",
    )
