"""The scheduler role: completes series, routes them, and reconciles the queue.

Each complete series (``node.completion``: by evidence, or its quiet period) is marked
complete, routed (``node.routing`` creates its jobs and returns a verdict), and the
verdict written (``node.series_state``, the one writer of a series' state), all in one
transaction.

It runs one loop, which does not poll: after each pass it sleeps until the earliest
moment a receiving series may be complete (the end of its grace, or of its quiet
period), the reconciler's next turn, or a :meth:`Scheduler.wake` (the Storage SCP's
association callback, ``node.completion_release``: an association ended), whichever
comes first. It never sleeps longer than the quiet period, so a series whose
association sends no news (still open, or served where no wake reaches) is never late.
Jobs are created in the database first and sent to Celery after the commit; anything
the broker lost (a Redis restart, a crash between commit and send) is found again by
the reconciler, which re-sends jobs queued for too long.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from models.registry import ModelRegistry
from node import series_state
from node.completion import SeriesCompletion
from node.db.models import JobState, utcnow
from node.db.session import SessionFactory, transaction
from node.db.worklist import UpsPriority
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.priority import JobPriorities
from node.routing import route_series
from node.settings import Settings

log = logging.getLogger(__name__)

SHORTEST_SLEEP = 0.05  # s; a deadline already due (a series another pass holds) is no spin
AFTER_FAILURE = 1.0  # s before a pass that failed (database or broker down) is tried again


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        registry: ModelRegistry,
        queue: JobQueue,
        ledger: JobLedger,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.registry = registry
        self.queue = queue
        self.ledger = ledger
        self.completion = SeriesCompletion(
            settings.stable_seconds, settings.completion_grace_seconds, settings.completion_rules
        )
        self.priorities = JobPriorities(settings.priority_rules)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reconcile = 0.0

    def route_complete_series(self, now: datetime | None = None) -> list[int]:
        """One completion pass, judging the series as of ``now`` (default: now); returns
        the ids of the jobs it queued."""
        queued: list[tuple[int, UpsPriority]] = []
        with transaction(self.sessions) as session:
            for series in self.completion.complete_series(session, now or utcnow()):
                verdict = route_series(session, series, self.registry, self.priorities)
                series_state.record_routing(series, verdict)
                session.flush()
                job_ids = [job.id for job in verdict.jobs]
                uid, why = series.series_instance_uid, series.completed_by
                if job_ids:
                    log.info("series %s complete, %s -> jobs %s", uid, why, job_ids)
                else:
                    log.info("series %s complete, %s: %s", uid, why, verdict.reason)
                queued.extend((job.id, job.priority) for job in verdict.jobs)
        # The most urgent first, so that a worker waiting now takes it.
        for job_id, priority in sorted(queued, key=lambda queued: queued[1].rank):
            self.queue.send_analysis(job_id, priority)
        return [job_id for job_id, _ in queued]

    def reconcile(self, older_than: timedelta | None = None) -> list[int]:
        """Re-send jobs the broker may have lost; returns their ids."""
        age = (
            older_than
            if older_than is not None
            else timedelta(seconds=self.settings.reconcile_seconds)
        )
        lost_after = timedelta(seconds=self.settings.lost_worker_seconds)
        resent = []
        for job_id, state in self.ledger.stale(utcnow(), age, lost_after):
            if state is JobState.DELIVERING:
                self.queue.send_delivery(job_id)
            elif state is JobState.RUNNING:
                if not self.ledger.requeue_lost(job_id, lost_after):
                    continue  # its worker renewed it meanwhile, or the ledger gave it up
                log.warning("job %s: its worker stopped renewing it; running it again", job_id)
                self.queue.send_analysis(job_id)
            else:
                self.queue.send_analysis(job_id)
            resent.append(job_id)
        if resent:
            log.warning("re-sent jobs the broker may have lost: %s", resent)
        return resent

    @property
    def _reconcile_period(self) -> float:
        return min(self.settings.reconcile_seconds, self.settings.lost_worker_seconds, 30.0)

    def run_once(self) -> float:
        """One pass; returns how long the loop may sleep before the next, unless woken."""
        judged_at = utcnow()
        self.route_complete_series(judged_at)
        if time.monotonic() - self._last_reconcile >= self._reconcile_period:
            self._last_reconcile = time.monotonic()
            self.reconcile()
        return self.seconds_to_next_pass(judged_at)

    def seconds_to_next_pass(self, judged_at: datetime | None = None) -> float:
        """Until the earliest series deadline or the reconciler's turn, at most the quiet
        period (module docstring). ``judged_at``: when the last pass judged the series."""
        reconcile = self._last_reconcile + self._reconcile_period - time.monotonic()
        sleep = min(reconcile, max(self.settings.stable_seconds, SHORTEST_SLEEP))
        now = utcnow()
        with self.sessions() as session:
            # Deadlines as of the pass, not of now: a series whose grace ended while the
            # pass worked was judged too early, and is due at once rather than after the
            # quiet period.
            deadline = self.completion.next_deadline(session, judged_at or now)
        if deadline is not None:
            sleep = min(sleep, (deadline - now).total_seconds() + 0.01)  # due when it wakes
        return max(sleep, SHORTEST_SLEEP)

    def wake(self) -> None:
        """Something the receiving series may be judged on happened (an association
        ended): pass now rather than at the next deadline."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # a wake from now on is seen by this pass or ends the sleep
            try:
                sleep = self.run_once()
            except Exception:  # noqa: BLE001 - a passing DB or broker fault; next pass retries
                log.exception("scheduler pass failed")
                sleep = AFTER_FAILURE
            self._wake.wait(sleep)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
