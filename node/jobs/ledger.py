"""The one writer of job state, and the timeline of each job's steps.

Every transition of ``Job.state`` is made here: QUEUED -> RUNNING (``start``), RUNNING
-> QUEUED (``requeue_lost``), RUNNING -> DELIVERING (``analyzed``), -> FAILED
(``fail``), FAILED/SUCCEEDED -> QUEUED (``reset_for_retry``). From DELIVERING on, the
state follows the outbox rows: the outbox judges them (``node.delivery.outbox``, a
``Settlement``) inside the ledger's transaction, and the ledger writes the verdict
(``settle``: SUCCEEDED, or FAILED with the reason) or revives the job on an operator's
retry (``redeliver``: FAILED -> DELIVERING).

Every transition is a short transaction on the database, which is the source of
truth: a worker that dies leaves a row that the reconciler can find and re-send.

A lost worker (killed, out of memory, its machine gone) is recorded on the attempt it
was running: its open steps fail as interrupted and a ``worker_lost`` step says so. A
job whose worker is lost ``max_job_attempts`` attempts in a row (a series that kills
every worker that loads it, say) is not run again but FAILED with the reason, and a
``given_up`` step ends the run, so it cannot hold the queue for ever; an operator's
retry starts a new run with the same allowance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node.db.models import Job, JobState, JobStep, ResultKind, ResultObject, StepState, utcnow
from node.db.session import SessionFactory, transaction
from node.delivery.destinations import Destination
from node.delivery.outbox import Delivered, Settlement, StillDelivering, Undeliverable, plan
from node.jobs.critical_findings import record_critical_findings
from node.ups.job_sync import follow_job  # the job's own workitem follows it (node.ups)

log = logging.getLogger(__name__)

RETRYABLE = {JobState.FAILED, JobState.SUCCEEDED}
# The steps that record an attempt whose worker was lost, and the end of a run of them.
WORKER_LOST = "worker_lost"
GIVEN_UP = "given_up"
INTERRUPTED = "interrupted: the worker running this step was lost"


def _running(now: datetime, attempt: object) -> dict[str, object]:
    """The columns of a job taken by a worker for attempt ``attempt`` (a number or the
    SQL expression that makes it)."""
    return {
        "state": JobState.RUNNING,
        "attempts": attempt,
        "started_at": now,
        "heartbeat_at": now,
        "finished_at": None,
        "error": "",
    }


@dataclass(frozen=True)
class NewResult:
    kind: ResultKind
    sop_class_uid: str
    sop_instance_uid: str
    path: str  # relative to the results directory
    series_instance_uid: str = ""  # referenced by the job's workitem (node.ups.job_sync)


@dataclass(frozen=True)
class Settled:
    """A job after its deliveries were judged: its state, and when its next delivery
    pass is due (None: nothing is open, or the job is not delivering)."""

    state: JobState
    wait_seconds: float | None


Judge = Callable[[Session, int], Settlement]
"""Where a job's deliveries stand, read in the ledger's session (``Outbox.settlement``)."""

Revive = Callable[[Session, int], int]
"""Start a job's dead deliveries over, in the ledger's session (``Outbox.revive_dead``)."""


class JobLedger:
    def __init__(self, sessions: SessionFactory, max_job_attempts: int = 3) -> None:
        self.sessions = sessions
        self.max_job_attempts = max_job_attempts  # attempts lost in a row before FAILED

    def mark_enqueued(self, job_id: int, countdown: float = 0.0) -> None:
        """Record when the job's message is due to be taken (now, or after a countdown),
        so the reconciler re-sends it only once it is overdue."""
        with transaction(self.sessions) as session:
            job = session.get_one(Job, job_id)
            job.enqueued_at = utcnow() + timedelta(seconds=countdown)

    def start(self, job_id: int, lost_after: timedelta) -> int | None:
        """Take a job for analysis; the attempt number, or None if there is nothing to do.

        A RUNNING job is taken again only when its heartbeat is older than
        ``lost_after``: its worker died, and the work is idempotent (unless that was the
        last loss allowed: the job fails instead). A message that the broker re-delivers
        while a live worker still runs the job is ignored.

        Taking is one conditional UPDATE whose row count says who won, so of workers
        racing for one job (a message delivered twice) exactly one starts it: on
        PostgreSQL the loser's UPDATE waits for the winner's row lock and then no longer
        matches; SQLite, which ignores ``FOR UPDATE``, runs one writer at a time.
        """
        now = utcnow()
        with transaction(self.sessions) as session:
            taken = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.QUEUED)
                .values(_running(now, Job.attempts + 1))
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount == 1:
                follow_job(session, job_id)
                return session.scalars(select(Job.attempts).where(Job.id == job_id)).one()
            job = self._claim_lost(session, job_id, now, lost_after)
            if job is None or self._worker_lost(session, job):
                return None
            for name, value in _running(now, job.attempts + 1).items():
                setattr(job, name, value)
            follow_job(session, job_id)
            return job.attempts

    def beat(self, job_id: int) -> None:
        """Renew a running job's heartbeat (the worker that runs it is alive)."""
        with transaction(self.sessions) as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.RUNNING)
                .values(heartbeat_at=utcnow())
            )

    def requeue_lost(self, job_id: int, lost_after: timedelta) -> bool:
        """RUNNING with a stale heartbeat -> QUEUED, to be sent again; whether it was.

        False when its worker still renews it, or when this was the
        ``max_job_attempts``-th loss in a row: the job is then FAILED, not queued.
        """
        with transaction(self.sessions) as session:
            job = self._claim_lost(session, job_id, utcnow(), lost_after)
            if job is None or self._worker_lost(session, job):
                return False
            job.state = JobState.QUEUED
            job.enqueued_at = None
            follow_job(session, job_id)
            return True

    @staticmethod
    def _claim_lost(
        session: Session, job_id: int, now: datetime, lost_after: timedelta
    ) -> Job | None:
        """The RUNNING job whose heartbeat is older than ``lost_after``, claimed for this
        transaction by one conditional UPDATE (its heartbeat renewed: any other caller
        then finds it alive); None when it is not such a job, or another caller won."""
        claimed = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.state == JobState.RUNNING,
                Job.heartbeat_at.is_(None) | (Job.heartbeat_at < now - lost_after),
            )
            .values(heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None
        return session.get_one(Job, job_id, populate_existing=True)

    def _worker_lost(self, session: Session, job: Job) -> bool:
        """Record that ``job``'s current attempt lost its worker; whether the job is
        given up (FAILED) because that makes ``max_job_attempts`` losses in a row."""
        attempt = job.attempts
        session.execute(
            update(JobStep)
            .where(
                JobStep.job_pk == job.id,
                JobStep.attempt == attempt,
                JobStep.state == StepState.RUNNING,
            )
            .values(state=StepState.FAILED, detail=INTERRUPTED)
        )
        in_a_row = 1 + _lost_in_a_row_before(session, job.id, attempt)
        times = f"{in_a_row} time{'s' if in_a_row > 1 else ''}"
        lost = f"worker lost {times} in a row (killed, out of memory?)"
        session.add(
            JobStep(job_pk=job.id, attempt=attempt, name=WORKER_LOST, state=StepState.FAILED,
                    detail=f"{lost}: it stopped renewing the job's heartbeat")
        )  # fmt: skip
        if in_a_row < self.max_job_attempts:
            log.warning("job %s: %s; running it again", job.id, lost)
            return False
        job.state = JobState.FAILED
        job.finished_at = utcnow()
        job.error = (
            f"{lost}: not run again, so it holds no worker; retry it once the cause is "
            "found (a series too large for the worker's memory?)"
        )
        session.add(
            JobStep(job_pk=job.id, attempt=attempt, name=GIVEN_UP, state=StepState.FAILED,
                    detail=job.error)
        )  # fmt: skip
        log.error("job %s: %s", job.id, job.error)
        follow_job(session, job.id)
        return True

    @contextmanager
    def step(self, job_id: int, attempt: int, name: str) -> Iterator[None]:
        """Record a pipeline step's timing, and its reason if it raises."""
        with transaction(self.sessions) as session:
            row = JobStep(job_pk=job_id, attempt=attempt, name=name, state=StepState.RUNNING)
            session.add(row)
            session.flush()
            step_id = row.id
        began = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._close_step(step_id, StepState.FAILED, time.perf_counter() - began, str(exc))
            raise
        self._close_step(step_id, StepState.DONE, time.perf_counter() - began, "")

    def _close_step(self, step_id: int, state: StepState, seconds: float, detail: str) -> None:
        with transaction(self.sessions) as session:
            row = session.get_one(JobStep, step_id)
            row.state = state
            row.seconds = round(seconds, 4)
            row.detail = detail[:2000]

    def analyzed(
        self,
        job_id: int,
        findings: dict,
        results: list[NewResult],
        destinations: list[Destination],
    ) -> None:
        """The job's results are encoded and on disk; each is planned into the outbox
        for every destination that takes it, in the same transaction, which also
        writes a ``CriticalFinding`` row per critical rule the findings say fired."""
        with transaction(self.sessions) as session:
            job = session.get_one(Job, job_id)
            job.findings = findings
            record_critical_findings(session, job_id, findings)
            job.state = JobState.DELIVERING
            rows = []
            for result in results:
                row = session.scalars(
                    select(ResultObject).where(
                        ResultObject.sop_instance_uid == result.sop_instance_uid
                    )
                ).first()
                if row is None:
                    row = ResultObject(sop_instance_uid=result.sop_instance_uid)
                    session.add(row)
                row.job_pk = job_id
                row.kind = result.kind
                row.sop_class_uid = result.sop_class_uid
                row.path = result.path
                rows.append(row)
            session.flush()
            plan(session, job, rows, destinations)
            series_of = {r.sop_instance_uid: r.series_instance_uid for r in results}
            follow_job(session, job_id, series_of, destinations)

    def fail(self, job_id: int, reason: str) -> None:
        with transaction(self.sessions) as session:
            job = session.get_one(Job, job_id)
            job.state = JobState.FAILED
            job.finished_at = utcnow()
            job.error = reason[:4000] or "failed without a reason"
            follow_job(session, job_id)

    def reset_for_retry(self, job_id: int) -> None:
        """FAILED (or SUCCEEDED) -> QUEUED. Raises LookupError / ValueError with a reason."""
        with transaction(self.sessions) as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            if job.state not in RETRYABLE:
                raise ValueError(
                    f"job {job_id} is {job.state.value}; only a finished job is retried"
                )
            job.state = JobState.QUEUED
            job.error = ""
            job.finished_at = None
            job.enqueued_at = None
            follow_job(session, job_id)

    def settle(self, job_id: int, judge: Judge) -> Settled:
        """Bring a DELIVERING job's state in line with the outbox's verdict on it.

        ``judge`` (``Outbox.settlement``) reads the rows in this transaction, with the
        job locked, so an operator's retry cannot slip between verdict and state.
        """
        with transaction(self.sessions) as session:
            job = session.get_one(Job, job_id, with_for_update=True)
            if job.state is not JobState.DELIVERING:
                return Settled(job.state, None)
            match judge(session, job_id):
                case StillDelivering(wait_seconds=wait):
                    return Settled(job.state, wait)
                case Undeliverable(reason=reason):
                    job.state = JobState.FAILED
                    job.error = reason[:4000]
                case Delivered():
                    job.state = JobState.SUCCEEDED
                    job.error = ""
            job.finished_at = utcnow()
            follow_job(session, job_id)
            return Settled(job.state, None)

    def redeliver(self, job_id: int, revive: Revive) -> int:
        """FAILED -> DELIVERING when ``revive`` (``Outbox.revive_dead``) starts dead rows
        over; the rows revived (0: none, or the job is not failed). LookupError if absent.
        """
        with transaction(self.sessions) as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            if job.state is not JobState.FAILED:
                return 0
            revived = revive(session, job_id)
            if revived:
                job.state = JobState.DELIVERING
                job.error = ""
                job.finished_at = None
                follow_job(session, job_id)
            return revived

    def state_of(self, job_id: int) -> JobState | None:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            return job.state if job else None

    def stale(
        self, now: datetime, queued_for: timedelta, lost_after: timedelta | None = None
    ) -> list[tuple[int, JobState]]:
        """Jobs whose message or worker may have been lost: queued (or delivering) for
        longer than ``queued_for``, or running without a heartbeat for ``lost_after``."""
        cutoff = now - queued_for
        waiting = Job.state.in_([JobState.QUEUED, JobState.DELIVERING]) & (
            Job.enqueued_at.is_(None) | (Job.enqueued_at < cutoff)
        )
        condition = waiting
        if lost_after is not None:
            silent = Job.heartbeat_at.is_(None) | (Job.heartbeat_at < now - lost_after)
            condition = waiting | ((Job.state == JobState.RUNNING) & silent)
        with self.sessions() as session:
            rows = session.execute(select(Job.id, Job.state).where(condition)).all()
        return [(row[0], row[1]) for row in rows]


def _lost_in_a_row_before(session: Session, job_id: int, attempt: int) -> int:
    """How many attempts just before ``attempt`` lost their worker, back to the last
    attempt that ended otherwise or to the last run given up (an operator's retry
    starts a new run)."""
    marks = {
        (earlier, name)
        for earlier, name in session.execute(
            select(JobStep.attempt, JobStep.name).where(
                JobStep.job_pk == job_id,
                JobStep.attempt < attempt,
                JobStep.name.in_([WORKER_LOST, GIVEN_UP]),
            )
        )
    }
    count = 0
    for earlier in range(attempt - 1, 0, -1):
        if (earlier, GIVEN_UP) in marks or (earlier, WORKER_LOST) not in marks:
            break
        count += 1
    return count
