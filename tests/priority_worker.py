"""A real Celery analysis worker for the queue-order tests: the node's Celery app
(``node.jobs.celery_app.make_celery``) and worker arguments (``ainode worker --queues gpu``:
the solo pool, prefetch 1, late acknowledgement), with a stand-in analysis task.

The task notes each job id it takes on the Redis list ``TAKEN`` and returns; for the job
id given as ``--hold`` it first waits until the test pushes to ``RELEASE`` (a BLPOP, no
sleep), so the test can fill the queue while the worker is busy.

Run: ``python -m tests.priority_worker BROKER_URL --hold JOB_ID``.
"""

from __future__ import annotations

import argparse
import os

import redis
from celery import Task

from node.jobs.celery_app import make_celery
from node.jobs.contracts import ANALYZE_TASK, GPU_QUEUE

TAKEN = "priority-test:taken"
RELEASE = "priority-test:release"
HOLD_AT_MOST = 120  # s; a test that never releases the held job fails, not hangs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("broker_url")
    parser.add_argument("--hold", type=int, default=-1, help="job id to hold until released")
    args = parser.parse_args()
    app = make_celery(args.broker_url, visibility_timeout=3600)
    notes = redis.Redis.from_url(args.broker_url)

    @app.task(name=ANALYZE_TASK, bind=True)
    def analyze_series(self: Task, job_id: int) -> None:
        notes.rpush(TAKEN, job_id)
        if job_id == args.hold:
            notes.blpop([RELEASE], timeout=HOLD_AT_MOST)

    _ = analyze_series
    app.worker_main(
        [
            "worker",
            "--pool=solo",  # as ``ainode worker --queues gpu``
            f"--queues={GPU_QUEUE}",
            "--loglevel=WARNING",
            f"--hostname=priority-test-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
