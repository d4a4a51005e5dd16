"""The runner of requested workitems: a RIS asked for a study's analysis, the node
retrieves the study, has it analysed and completes the workitem.

One thread (``ainode serve`` starts it when retrieve sources are configured). Each pass
takes every workitem the node performs a step further, then claims the next SCHEDULED
one a RIS created (origin REQUESTED) or the node pulled from another provider (PULLED,
``node.performer``), the most urgent and then the oldest first:

1. claim: IN PROGRESS with a Transaction UID of the node's (``node.requests.workitem_report``);
2. retrieve the study from its source (``node.requests.request_source``, ``node.retrieve``);
3. wait until none of the study's series is still receiving: the scheduler completes
   and routes the series that arrived, and routing makes their jobs the workitem's
   while the node performs it (``node.requests.request_link``);
4. give the workitem the jobs of the series it held before (``node.routing.route_request``,
   the same manifests deciding), queued at the workitem's priority;
5. once every job has settled: COMPLETED, the Output Information Sequence referencing
   each result (``node.requests.request_outputs``); CANCELED when retrieval fails, no model
   accepts the study, or every analysis failed.

Progress is reported at each step (N-SET through the book: retrieving, analysing n of m,
delivering). A cancel request (``Workitem.cancel_requested_at``, set by the book) ends
the work at the next step, a retrieval under way included, CANCELED; jobs already
queued run to their end. Everything the runner needs is read from the database at each
step, so a workitem IN PROGRESS that this node performs is simply taken up again after
a restart (its study retrieved again unless it has jobs already: an identical resend
costs nothing). The runner looks again every ``AINODE_REQUESTS_POLL_SECONDS``, and at
once when the book it shares with the UPS DIMSE service commits a change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import func, select

from models.registry import ModelRegistry
from node import series_state
from node.db.models import Job, Series, SeriesState, Study
from node.db.session import SessionFactory, transaction
from node.db.worklist import UpsState, Workitem
from node.jobs.queue import JobQueue
from node.priority import JobPriorities
from node.requests.request_link import BY_PRIORITY, PERFORMED_ORIGINS
from node.requests.request_outputs import outcome, request_outputs
from node.requests.request_source import source_for
from node.requests.workitem_report import WorkitemReport
from node.retrieve.retrieve_outcome import METHOD_NAMES, RetrieveError
from node.retrieve.retriever import StudyRetriever
from node.routing import route_request
from node.scp import StorageSCP
from node.series_state import RoutingVerdict
from node.settings import Settings
from node.ups import attributes as attrs
from node.ups.book import UpsError, WorkitemBook
from node.ups.rows import NODE_PERFORMER

log = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # s between progress reports (and cancel checks) while retrieving
RETRIEVED = 40  # percent once the study is in; analysis fills 45..95


class CancelRequested(Exception):
    """A cancel was asked for while the study was being retrieved."""


class Stopping(Exception):
    """The node stops while a study is being retrieved: taken up again at its start."""


class RequestRunner:
    """Performs the requested workitems (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        book: WorkitemBook,
        retriever: StudyRetriever,
        registry: ModelRegistry,
        queue: JobQueue,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.report = WorkitemReport(book)
        self.retriever = retriever
        self.registry = registry
        self.queue = queue
        self.priorities = JobPriorities(settings.priority_rules)
        self._retrieved: set[str] = set()
        self._routed: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the workitems ---------------------------------------------------------------

    def _uids(self, state: UpsState, limit: int | None = None) -> list[str]:
        statement = (
            select(Workitem.sop_instance_uid)
            .where(Workitem.origin.in_(PERFORMED_ORIGINS), Workitem.state == state)
            .order_by(BY_PRIORITY, Workitem.id)
            .limit(limit)
        )
        if state is UpsState.IN_PROGRESS:
            statement = statement.where(Workitem.performer == NODE_PERFORMER)
        else:
            statement = statement.where(Workitem.cancel_requested_at.is_(None))
        with self.sessions() as session:
            return list(session.scalars(statement))

    def _row(self, uid: str) -> Workitem:
        with self.sessions() as session:
            row = session.scalars(select(Workitem).where(Workitem.sop_instance_uid == uid)).one()
            session.expunge(row)
            return row

    def run_once(self) -> bool:
        """One pass (module docstring); True when another is due at once (a workitem was
        claimed, so more may be waiting)."""
        for uid in self._uids(UpsState.IN_PROGRESS):
            if self._stop.is_set():
                return False
            self._step(uid)
        waiting = self._uids(UpsState.SCHEDULED, limit=1)
        if not waiting or self._stop.is_set():
            return False
        uid = waiting[0]
        if self.report.claim(uid) is not None:
            self._step(uid)
        return True

    def _step(self, uid: str) -> None:
        try:
            self._advance(uid)
        except UpsError as exc:  # ended or changed by someone else meanwhile
            log.warning("workitem %s: %s", uid, exc.message)
            self._forget(uid)
        except Exception:  # noqa: BLE001 - a fault of this workitem's step holds up no other
            log.exception("workitem %s: step failed; tried again at the next pass", uid)

    def _forget(self, uid: str) -> None:
        self._retrieved.discard(uid)
        self._routed.discard(uid)
        self.report.forget(uid)

    def _advance(self, uid: str) -> None:
        row = self._row(uid)
        tuid = row.transaction_uid
        if row.state is not UpsState.IN_PROGRESS or not tuid:
            self._forget(uid)
            return
        if row.cancel_requested_at is not None:
            self._cancel(uid, tuid, f"cancel requested: {row.cancel_reason}".rstrip(": "))
            return
        if uid not in self._retrieved:
            if self._job_count(row) > 0:  # retrieved before a restart: jobs exist already
                self._retrieved.add(uid)
            elif not self._retrieve(row, tuid):
                return
        receiving = self._receiving(row)
        if receiving:
            words = f"waiting for {receiving} series of the study to be complete"
            self.report.progress(uid, tuid, RETRIEVED, words)
            return
        if uid not in self._routed and not self._route(row, tuid):
            return
        self._follow(row, tuid)

    def _cancel(self, uid: str, tuid: str, reason: str) -> None:
        self.report.cancel(uid, tuid, reason)
        self._forget(uid)

    # ---- steps ---------------------------------------------------------------------

    def _retrieve(self, row: Workitem, tuid: str) -> bool:
        """The study retrieved (True), or the workitem ended (or the node stops)."""
        uid = row.sop_instance_uid
        source = source_for(attrs.from_json(row.dataset or {}), self.settings)
        refusal = (
            "the workitem names no study (Input Information Sequence)"
            if not row.study_instance_uid
            else f"the requested model {row.requested_model!r} is not installed"
            if row.requested_model and row.requested_model not in self.registry.names
            else "no retrieve source is configured"
            if source is None
            else None
        )
        if refusal is not None or source is None:
            self._cancel(uid, tuid, refusal or "no retrieve source is configured")
            return False
        method = METHOD_NAMES[source.method]
        self.report.progress(uid, tuid, 1, f"retrieving the study from {source.name} ({method})")
        try:
            retrieved = self.retriever.retrieve(
                row.study_instance_uid, source, self._retrieving(row, tuid, source.name)
            )
        except Stopping:
            return False
        except CancelRequested:
            self._cancel(uid, tuid, f"cancel requested: {self._row(uid).cancel_reason}")
            return False
        except RetrieveError as exc:
            self._cancel(uid, tuid, f"retrieval failed: {exc}")
            return False
        self._retrieved.add(uid)
        words = f"retrieved {retrieved.stored} instances from {source.name}"
        if retrieved.warning:
            words += f" ({retrieved.warning})"
        self.report.progress(uid, tuid, RETRIEVED, words)
        return True

    def _retrieving(
        self, row: Workitem, tuid: str, source: str
    ) -> Callable[[int, int | None], None]:
        """The retrieval's progress callback: a report and a cancel check, now and then."""
        uid = row.sop_instance_uid
        last = time.monotonic()

        def progress(done: int, total: int | None) -> None:
            nonlocal last
            if time.monotonic() - last < PROGRESS_EVERY:
                return
            last = time.monotonic()
            if self._stop.is_set():
                raise Stopping(uid)
            if self._row(uid).cancel_requested_at is not None:
                raise CancelRequested(uid)
            percent = 5 + (RETRIEVED - 10) * done // total if total else 5
            of = f" of {total}" if total else ""
            self.report.progress(uid, tuid, percent, f"retrieving from {source}: {done}{of}")

        return progress

    def _job_count(self, row: Workitem) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count(Job.id)).where(Job.workitem_pk == row.id)) or 0

    def _receiving(self, row: Workitem) -> int:
        with self.sessions() as session:
            return session.scalar(
                select(func.count(Series.id))
                .join(Study, Series.study_pk == Study.id)
                .where(
                    Study.study_instance_uid == row.study_instance_uid,
                    Series.state == SeriesState.RECEIVING,
                )
            ) or 0  # fmt: skip

    def _route(self, row: Workitem, tuid: str) -> bool:
        """Jobs for the series held before the request; False when it ended for none."""
        with transaction(self.sessions) as session:
            request = session.get_one(Workitem, row.id)
            routing = route_request(session, request, self.registry, self.priorities)
            by_series: dict[int, list[Job]] = {}
            for job in routing.jobs:
                by_series.setdefault(job.series.id, []).append(job)
            session.flush()
            for jobs in by_series.values():
                verdict = RoutingVerdict(routed=True, reason="", jobs=tuple(jobs))
                series_state.record_routing(jobs[0].series, verdict)
            queued = sorted(((j.id, j.priority) for j in routing.jobs), key=lambda q: q[1].rank)
        for job_id, priority in queued:
            self.queue.send_analysis(job_id, priority)
        self._routed.add(row.sop_instance_uid)
        if self._job_count(row) == 0:
            reasons = "; ".join(routing.refusals) or "no model is installed"
            self._cancel(row.sop_instance_uid, tuid, f"no model accepts the study: {reasons}")
            return False
        if queued:
            log.info("workitem %s: jobs %s", row.sop_instance_uid, [q[0] for q in queued])
        return True

    def _follow(self, row: Workitem, tuid: str) -> None:
        uid = row.sop_instance_uid
        with self.sessions() as session:
            request = session.get_one(Workitem, row.id)
            now = outcome(session, request)
            if now.settled < now.jobs:
                percent = 45 + 50 * now.settled // now.jobs
                words = f"analysing: {now.settled} of {now.jobs} analyses done"
                if now.delivering:
                    words += f", {now.delivering} delivering"
                self.report.progress(uid, tuid, percent, words)
                return
            outputs = request_outputs(session, request, self.settings) if now.succeeded else []
        if not now.succeeded:
            self._cancel(uid, tuid, "every analysis failed: " + "; ".join(now.failed))
            return
        words = f"{now.succeeded} of {now.jobs} analyses done, {len(outputs)} results"
        if now.failed:
            words += "; failed: " + "; ".join(now.failed)
        self.report.complete(uid, tuid, outputs, words)
        self._forget(uid)

    # ---- the thread ------------------------------------------------------------------

    def wake(self) -> None:
        """A workitem was created or changed: look now rather than at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                again = self.run_once()
            except Exception:  # noqa: BLE001 - a passing DB or peer fault; the next pass retries
                log.exception("requested workitems: pass failed")
                again = False
            if not again:
                self._wake.wait(self.settings.requests_poll_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="requests", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def request_runner(
    settings: Settings,
    sessions: SessionFactory,
    book: WorkitemBook,
    scp: StorageSCP,
    registry: ModelRegistry,
    queue: JobQueue,
) -> RequestRunner | None:
    """The runner ``ainode serve`` starts, retrieving into ``scp``'s receive path; None
    when no retrieve source is configured (the requested workitems then wait for
    another performer)."""
    if not settings.retrieve_sources:
        return None
    retriever = StudyRetriever(settings, scp.store, scp.on_association)
    runner = RequestRunner(settings, sessions, book, retriever, registry, queue)
    told = book.on_commit  # the event dispatcher's wake

    def on_commit() -> None:  # a workitem created or changed: the runner looks at once
        if told is not None:
            told()
        runner.wake()

    book.on_commit = on_commit
    return runner
