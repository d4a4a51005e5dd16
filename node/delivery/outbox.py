"""The outbox: every result's delivery to every destination, and every attempt, in the database.

A job's results are planned into the outbox in the same transaction that records
them (``plan``), one row per result and destination that takes it. The delivery pass
claims the rows that are due, sends them, and reports each outcome here; a failure
waits an exponentially growing, jittered delay, and after the last attempt the row is
dead-lettered until an operator retries the job. A destination that asks for storage
commitment keeps its rows COMMITTING until the archive's N-EVENT-REPORT says they
are committed (or the report is late, which counts as a failed attempt).

This module writes the outbox rows (``Delivery``, ``DeliveryAttempt``) and nothing
else. Where a job's deliveries stand is a verdict, a :data:`Settlement` (delivered;
undeliverable, with the reason; still delivering, with the wait until the next row is
due), which ``node.jobs.ledger`` turns into the job's state.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Job,
    ResultKind,
    ResultObject,
    utcnow,
)
from node.db.session import SessionFactory, locking_transaction, transaction
from node.delivery.destinations import Destination
from node.settings import Settings

# A claimed row is not claimed again for this long: another delivery task that runs
# at the same time (a re-sent message) skips it instead of sending it twice. Longer
# than a pass takes (network timeouts are 30-60 s); short enough that a worker killed
# mid-pass delays its rows by minutes, not hours.
CLAIM_SECONDS = 180.0

OPEN_STATES = (DeliveryState.PENDING, DeliveryState.COMMITTING)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; compare them as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=utcnow().tzinfo)


@dataclass(frozen=True)
class DueDelivery:
    """A delivery claimed for one attempt: what to send, and where."""

    id: int
    job_id: int
    destination: str
    kind: ResultKind
    sop_class_uid: str
    sop_instance_uid: str
    path: str  # relative to the results directory
    attempt: int


@dataclass(frozen=True)
class Delivered:
    """Every row of the job is delivered (stored, and committed where asked)."""


@dataclass(frozen=True)
class Undeliverable:
    """Nothing is left to try and some rows are dead-lettered; ``reason`` says which."""

    reason: str


@dataclass(frozen=True)
class StillDelivering:
    """Some rows are open; the next one is due in ``wait_seconds``."""

    wait_seconds: float


Settlement = Delivered | Undeliverable | StillDelivering
"""Where a job's deliveries stand, as the outbox judges it from its rows."""


def backoff_seconds(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: about ``base * 2**(failures-1)``, at most ``cap``.

    Half the delay is fixed and half random, so archives coming back are not hit by
    every node at the same instant, and no retry comes sooner than half its step.
    """
    step = min(cap, base * 2 ** max(failures - 1, 0))
    return step / 2 + random.uniform(0, step / 2)


def plan(
    session: Session, job: Job, results: Iterable[ResultObject], destinations: list[Destination]
) -> int:
    """Put each result on its way to each destination that takes it; the rows planned.

    A result planned before (a re-run of the job) starts over: same UIDs, so sending
    it again replaces the archive's copy instead of adding one.
    """
    planned = 0
    now = utcnow()
    for result in results:
        existing = {row.destination: row for row in result.deliveries}
        for destination in destinations:
            if not destination.takes(result.kind, job.model_name):
                continue
            row = existing.get(destination.name)
            if row is None:
                row = Delivery(result=result, destination=destination.name)
                session.add(row)
            row.state = DeliveryState.PENDING
            row.attempts = 0
            row.next_attempt_at = now
            row.transaction_uid = None
            row.last_error = ""
            row.stored_at = None
            row.delivered_at = None
            planned += 1
    return planned


class Outbox:
    """The outbox rows of every job: claimed, stored, failed, committed, judged, revived."""

    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    # ---- the delivery pass's side --------------------------------------------

    def claim_due(self, job_id: int) -> list[DueDelivery]:
        """Take the job's rows that are due for an attempt; late commitments fail here."""
        now = utcnow()
        claimed: list[DueDelivery] = []
        # Delivery passes of one job may run at once (threads of the delivery worker):
        # only one of them claims a row.
        with locking_transaction(self.sessions) as session:
            rows = session.scalars(
                select(Delivery)
                .join(ResultObject)
                .where(ResultObject.job_pk == job_id, Delivery.state.in_(OPEN_STATES))
                .order_by(Delivery.id)
                .with_for_update()
            ).all()
            for row in rows:
                if _aware(row.next_attempt_at) > now:
                    continue
                if row.state is DeliveryState.COMMITTING:
                    seconds = self.settings.commitment_timeout_seconds
                    self._fail(session, row, f"no storage commitment report within {seconds:g} s")
                    continue
                row.attempts += 1
                row.next_attempt_at = now + timedelta(seconds=CLAIM_SECONDS)
                claimed.append(
                    DueDelivery(
                        id=row.id,
                        job_id=job_id,
                        destination=row.destination,
                        kind=row.result.kind,
                        sop_class_uid=row.result.sop_class_uid,
                        sop_instance_uid=row.result.sop_instance_uid,
                        path=row.result.path,
                        attempt=row.attempts,
                    )
                )
        return claimed

    def stored(self, ids: list[int], transaction_uid: str | None = None) -> None:
        """The destination stored these; with a transaction UID, commitment is awaited."""
        now = utcnow()
        with transaction(self.sessions) as session:
            for row in self._rows(session, ids):
                row.stored_at = now
                row.last_error = ""
                # The attempt's time is the row's stored_at: timelines order them.
                session.add(
                    DeliveryAttempt(delivery=row, number=row.attempts, outcome="stored", at=now)
                )
                if transaction_uid is None:
                    self._delivered(row, now)
                else:
                    row.state = DeliveryState.COMMITTING
                    row.transaction_uid = transaction_uid
                    row.next_attempt_at = now + timedelta(
                        seconds=self.settings.commitment_timeout_seconds
                    )

    def failed(self, ids: list[int], reason: str) -> None:
        """These attempts failed: wait and try again, or dead-letter after the last."""
        with transaction(self.sessions) as session:
            for row in self._rows(session, ids):
                self._fail(session, row, reason)

    def commitment_report(
        self, transaction_uid: str, committed: list[str], failed: dict[str, str]
    ) -> set[int]:
        """Apply an N-EVENT-REPORT; the ids of the jobs it concerns.

        ``failed`` maps SOP Instance UIDs to the archive's reason. A UID the report
        names in neither list stays COMMITTING and fails when the report is late.
        """
        now = utcnow()
        jobs: set[int] = set()
        with transaction(self.sessions) as session:
            rows = session.scalars(
                select(Delivery)
                .where(
                    Delivery.transaction_uid == transaction_uid,
                    Delivery.state == DeliveryState.COMMITTING,
                )
                .with_for_update()
            ).all()
            for row in rows:
                uid = row.result.sop_instance_uid
                if uid in committed:
                    session.add(
                        DeliveryAttempt(
                            delivery=row, number=row.attempts, outcome="committed", at=now
                        )
                    )
                    self._delivered(row, now)
                elif uid in failed:
                    self._fail(session, row, f"storage commitment failed: {failed[uid]}")
                else:
                    continue
                jobs.add(row.result.job_pk)
        return jobs

    # ---- verdicts, applied by the ledger in its own transaction ------------------

    def settlement(self, session: Session, job_id: int) -> Settlement:
        """Judge where the job's deliveries stand, in the ledger's ``session``."""
        rows = session.scalars(
            select(Delivery)
            .join(ResultObject)
            .where(ResultObject.job_pk == job_id)
            .order_by(Delivery.id)
        ).all()
        open_rows = [row for row in rows if row.state in OPEN_STATES]
        if open_rows:
            due = min(_aware(row.next_attempt_at) for row in open_rows)
            return StillDelivering(max(0.0, (due - utcnow()).total_seconds()))
        dead = [row for row in rows if row.state is DeliveryState.DEAD]
        if not dead:
            return Delivered()
        names = sorted({row.destination for row in dead})
        return Undeliverable(
            f"delivery dead-lettered: {len(dead)} object(s) to {', '.join(names)} "
            f"after {self.settings.delivery_attempts} attempt(s); last error: "
            f"{dead[-1].last_error}"
        )

    @staticmethod
    def revive_dead(session: Session, job_id: int) -> int:
        """An operator's retry: the job's dead-lettered rows start over; how many."""
        rows = session.scalars(
            select(Delivery)
            .join(ResultObject)
            .where(ResultObject.job_pk == job_id, Delivery.state == DeliveryState.DEAD)
            .with_for_update()
        ).all()
        now = utcnow()
        for row in rows:
            row.state = DeliveryState.PENDING
            row.attempts = 0
            row.next_attempt_at = now
            row.last_error = ""
        return len(rows)

    # ---- bookkeeping ---------------------------------------------------------

    @staticmethod
    def _rows(session: Session, ids: list[int]) -> list[Delivery]:
        if not ids:
            return []
        return list(session.scalars(select(Delivery).where(Delivery.id.in_(ids)).with_for_update()))

    @staticmethod
    def _delivered(row: Delivery, now: datetime) -> None:
        row.state = DeliveryState.DELIVERED
        row.delivered_at = now
        row.last_error = ""

    def _fail(self, session: Session, row: Delivery, reason: str) -> None:
        row.last_error = reason[:2000]
        row.transaction_uid = None
        session.add(
            DeliveryAttempt(delivery=row, number=row.attempts, outcome="failed", detail=reason)
        )
        if row.attempts >= self.settings.delivery_attempts:
            row.state = DeliveryState.DEAD
            return
        row.state = DeliveryState.PENDING
        wait = backoff_seconds(
            row.attempts,
            self.settings.delivery_backoff_seconds,
            self.settings.delivery_backoff_max_seconds,
        )
        row.next_attempt_at = utcnow() + timedelta(seconds=wait)
