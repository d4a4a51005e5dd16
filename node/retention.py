"""Retention: deleting studies the node no longer needs, so its disk never fills.

A study is *settled* when none of its series is still receiving and every job on it
is finished with nothing left to deliver: SUCCEEDED, or FAILED with no result whose
outbox row is not delivered (a dead result waits for an operator's retry). Only a
settled study is ever deleted, with its files (spool and results) and every row that
hangs off it (instances, series, jobs, steps, results, deliveries; its patient once
no study is left); a study with work pending or results undelivered never is. With
no destination, a job's results are only kept locally and go with their study.

- **Age**: a settled study whose last activity (the newest instance received, the
  latest job finished) is older than ``AINODE_RETENTION_DAYS`` is deleted (0: kept
  for ever).
- **Disk**: while the data directory's free space is under ``HEADROOM`` times
  ``AINODE_MIN_FREE_BYTES`` (below which the SCP refuses C-STORE), the settled studies
  are deleted oldest first, whatever their age, until it is above.

**Order, and why it is crash-safe.** Each study is deleted in one transaction that
first locks its rows (SQLite: ``BEGIN IMMEDIATE``, which the SCP's committer takes
too; PostgreSQL: ``FOR UPDATE`` on its study, series and jobs, which an instance or
series insert referencing them must wait for), checks again that it is settled,
deletes its files, then its rows, and commits. Files go first, under the lock: no
C-STORE can file an instance into the study meanwhile, so a file removed is never one
just acknowledged (rows first would leave a window, after the commit, where a resent
instance lands at the same path and is then unlinked). A crash (or a failed commit)
after the files and before the rows leaves a study that is still settled and still
old, with rows naming files that are gone: the next sweep, which runs as the node
starts, deletes it again and finds nothing more to unlink. Empty folders are left in
place while the node runs (the receiver and the workers remember the folders they
made) and removed by :meth:`Retention.remove_empty_folders`, which ``ainode serve``
calls before its SCP and worker start.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, Table, and_, delete, exists, func, not_, select
from sqlalchemy.orm import Session

from node.db.models import (
    Base,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Patient,
    ResultObject,
    Series,
    SeriesState,
    Study,
    utcnow,
)
from node.db.session import SessionFactory
from node.settings import Settings
from node.storage import INCOMING

log = logging.getLogger(__name__)

# Disk pressure starts at this multiple of AINODE_MIN_FREE_BYTES, before the SCP
# has to refuse C-STORE.
HEADROOM = 2
_FINISHED = (JobState.SUCCEEDED, JobState.FAILED)


@dataclass(frozen=True)
class Deleted:
    """One study retention deleted, and why (``age`` or ``disk``)."""

    study_instance_uid: str
    why: str
    instances: int
    results: int


def _settled(study_pk: ColumnElement[int] | int) -> ColumnElement[bool]:
    """SQL: the study has no series receiving, no unfinished job, no undelivered result."""
    receiving = exists().where(Series.study_pk == study_pk, Series.state == SeriesState.RECEIVING)
    jobs = (
        select(Job.id).join(Series, Job.series_pk == Series.id).where(Series.study_pk == study_pk)
    )
    unfinished = exists(jobs.where(Job.state.not_in(_FINISHED)))
    undelivered = exists(
        jobs.join(ResultObject, ResultObject.job_pk == Job.id)
        .join(Delivery, Delivery.result_pk == ResultObject.id)
        .where(Delivery.state != DeliveryState.DELIVERED)
    )
    return and_(not_(receiving), not_(unfinished), not_(undelivered))


def _last_activity(study_pk: ColumnElement[int]) -> tuple[ColumnElement, ColumnElement]:
    received = select(func.max(Series.last_received_at)).where(Series.study_pk == study_pk)
    finished = (
        select(func.max(Job.finished_at))
        .join(Series, Job.series_pk == Series.id)
        .where(Series.study_pk == study_pk)
    )
    return received.scalar_subquery(), finished.scalar_subquery()


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _referencing(table: Table) -> list[tuple[Table, ColumnElement]]:
    """Every (table, column) whose foreign key points at ``table``'s rows."""
    return [
        (other, key.parent)
        for other in Base.metadata.sorted_tables
        for key in other.foreign_keys
        if key.column.table is table
    ]


def _delete_rows(session: Session, table: Table, where: ColumnElement[bool]) -> None:
    """Delete ``table``'s rows matching ``where`` and, first, every row referencing them,
    whichever tables hang off it (outbox, steps, operator actions, ...)."""
    ids = select(table.c.id).where(where)
    for other, column in _referencing(table):
        _delete_rows(session, other, column.in_(ids))
    session.execute(delete(table).where(where))


class Retention:
    """Deletes settled studies by age and under disk pressure (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        free_space: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.free_space = free_space or (lambda: shutil.disk_usage(settings.data_dir).free)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one sweep ---------------------------------------------------------------

    def candidates(self) -> list[tuple[int, datetime]]:
        """Settled studies and their last activity, oldest first."""
        received, finished = _last_activity(Study.id)
        query = select(Study.id, Study.first_received_at, received, finished).where(
            _settled(Study.id)
        )
        with self.sessions() as session:
            rows = session.execute(query).all()
        studies = []
        for pk, first, newest_instance, last_finished in rows:
            moments = [_utc(m) for m in (newest_instance, last_finished) if m is not None]
            studies.append((pk, max(moments, default=_utc(first))))
        return sorted(studies, key=lambda study: (study[1], study[0]))

    def under_pressure(self) -> bool:
        return self.free_space() < HEADROOM * self.settings.min_free_bytes

    def sweep(self, now: datetime | None = None) -> list[Deleted]:
        """One pass: settled studies past the retention age, then the oldest settled
        ones while the disk is under pressure. Returns what it deleted, in order."""
        now = now or utcnow()
        days = self.settings.retention_days
        cutoff = now - timedelta(days=days) if days > 0 else None
        deleted: list[Deleted] = []
        for pk, last in self.candidates():
            if cutoff is not None and last < cutoff:
                why = "age"
            elif self.settings.min_free_bytes > 0 and self.under_pressure():
                why = "disk"
            else:
                break  # oldest first: the rest are newer, and there is room
            gone = self.delete_study(pk, why, cutoff if why == "age" else None)
            if gone is not None:
                deleted.append(gone)
        return deleted

    def delete_study(
        self, study_pk: int, why: str, older_than: datetime | None = None
    ) -> Deleted | None:
        """Delete one study, its files first, in one locked transaction (module
        docstring); None when it is no longer settled (or no longer older than
        ``older_than``) once locked, or already gone."""
        with self.sessions() as session, session.begin():
            if session.get_bind().dialect.name == "sqlite":
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            study = session.get(Study, study_pk, with_for_update=True)
            if study is None:
                return None
            series = session.scalars(
                select(Series.id).where(Series.study_pk == study_pk).with_for_update()
            ).all()
            session.scalars(select(Job.id).where(Job.series_pk.in_(series)).with_for_update()).all()
            if not session.scalar(select(_settled(study_pk))):
                return None
            if older_than is not None:
                received, finished = _last_activity(Study.id)
                moments = session.execute(
                    select(received, finished).where(Study.id == study_pk)
                ).one()
                if any(_utc(m) >= older_than for m in moments if m is not None):
                    return None
            spool = session.scalars(select(Instance.path).where(Instance.series_pk.in_(series)))
            spool_paths = list(spool)
            job_ids = select(Job.id).where(Job.series_pk.in_(series))
            result_paths = list(
                session.scalars(select(ResultObject.path).where(ResultObject.job_pk.in_(job_ids)))
            )
            for path in spool_paths:
                (self.settings.spool_dir / path).unlink(missing_ok=True)
            for path in result_paths:
                (self.settings.results_dir / path).unlink(missing_ok=True)
            uid, patient_pk = study.study_instance_uid, study.patient_pk
            _delete_rows(session, _table(Study), Study.id == study_pk)
            others = select(Study.id).where(Study.patient_pk == patient_pk)
            if not session.scalar(select(exists(others))):
                _delete_rows(session, _table(Patient), Patient.id == patient_pk)
        gone = Deleted(uid, why, len(spool_paths), len(result_paths))
        log.info(
            "retention (%s): deleted study %s, %d instance(s), %d result(s)",
            why, uid, gone.instances, gone.results,
        )  # fmt: skip
        return gone

    # ---- folders and the periodic thread ------------------------------------------

    def remove_empty_folders(self) -> int:
        """Remove the empty folders of the spool and the results (not their roots, nor
        the spool's incoming folder); call before the SCP and the worker start, which
        remember the folders they made. Returns how many it removed."""
        removed = 0
        for root in (self.settings.spool_dir, self.settings.results_dir):
            if not root.is_dir():
                continue
            for dirpath, _dirs, _files in os.walk(root, topdown=False):
                folder = Path(dirpath)
                if folder == root or folder == root / INCOMING:
                    continue
                try:
                    folder.rmdir()
                except OSError:
                    continue  # not empty
                removed += 1
        return removed

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a passing DB fault; the next pass retries
                log.exception("retention sweep failed")
            self._stop.wait(self.settings.retention_interval_seconds)

    def start(self) -> None:
        """Sweep now (what a crash left half deleted included), then periodically."""
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
