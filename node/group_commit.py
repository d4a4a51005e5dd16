"""Group commit of received instances: one round of fsyncs and one transaction for
every instance that is ready at the same time.

Each C-STORE handler closes its file (written, not yet durable), then hands the
instance to the committer and waits. The committer's one thread takes every instance
waiting, and in one transaction records each under a SAVEPOINT of its own (so an
identity conflict or an integrity error of one undoes only that one), renames the kept
files into the spool, makes their bytes and the renames durable at once (one syncfs of
the spool's filesystem: one journal commit for the round, where a fsync per file and
per folder costs one each, and the filesystem serializes them), and commits; only then
is each handler woken with its own verdict. So no instance is
acknowledged before its file, its directory entry and its row are durable, and
instances that arrive together share the cost. A lone association gets a round to
itself at once: nothing waits for a batch to fill.

If the commit fails, every instance of the round is moved back out of the spool and
refused (the sender retries); a crash before the commit leaves kept files without rows,
which :func:`node.storage.sweep_spool` removes at start.

On SQLite the round takes the write lock at its start (BEGIN IMMEDIATE): its reads and
its writes then see one state, and another writer waits its turn (busy timeout) rather
than making the round fail on upgrade.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.db.session import SessionFactory
from node.identity_cache import IdentityCache, SeriesKey
from node.index import IdentityConflict, InstanceHeader, Outcome, Received, record
from node.storage import DurableFolder, IncomingFile, make_durable, move_back, move_into

log = logging.getLogger(__name__)

MAX_ROUND = 64  # instances per transaction; more wait for the next round
_ATTEMPTS = 3  # an integrity error (a row another writer just created) is retried


class CommitterStopped(RuntimeError):
    """The SCP is stopping; the instance was not recorded."""


@dataclass(eq=False)
class Pending:
    """One instance waiting for its round, and then its verdict."""

    header: InstanceHeader
    received: Received
    incoming: IncomingFile
    relative: Path
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    error: BaseException | None = None
    key: SeriesKey | None = None
    placed_new: bool = False


class GroupCommitter:
    """The one thread that records received instances, in rounds."""

    def __init__(self, sessions: SessionFactory, spool: DurableFolder) -> None:
        self.sessions = sessions
        self.spool = spool
        self.cache = IdentityCache()
        self.largest_round = 0  # the most instances one transaction has recorded so far
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        bind = sessions.kw.get("bind")
        self._sqlite = bind is not None and bind.dialect.name == "sqlite"

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.put(None)
        thread.join()

    def submit(
        self, header: InstanceHeader, received: Received, incoming: IncomingFile, relative: Path
    ) -> Outcome:
        """Record one instance in the next round; its verdict, once durable."""
        pending = Pending(header, received, incoming, relative)
        with self._lock:
            if self._thread is None:
                raise CommitterStopped("the Storage SCP is stopping")
            self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.outcome is not None
        return pending.outcome

    def _run(self) -> None:
        # One session for every round: building a Session costs more than a small round's
        # statements. Each round is its own transaction; the session outlives them.
        with self.sessions() as session:
            self._rounds(session)

    def _rounds(self, session: Session) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_ROUND:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._round(session, batch)
            # Forget this round's objects: the next round reads what others changed since
            # (the session factory does not expire on commit).
            session.expunge_all()

    def _round(self, session: Session, batch: list[Pending]) -> None:
        self.largest_round = max(self.largest_round, len(batch))
        try:
            for attempt in range(_ATTEMPTS):
                try:
                    self._transaction(session, batch)
                    break
                except IntegrityError:
                    # Only a lone instance (no savepoint) gets here: as in _record.
                    self._undo(batch[0])
                    self.cache.forget(batch[0].header.series_instance_uid)
                    if attempt == _ATTEMPTS - 1:
                        raise
        except BaseException as exc:  # noqa: BLE001 - every waiting handler gets the error
            log.error("a round of %d received instances failed: %s", len(batch), exc)
            for pending in batch:
                if pending.error is None:
                    pending.error = exc
                self._undo(pending)
        else:
            self.cache.learn(
                {p.header.series_instance_uid: p.key for p in batch if p.key is not None}
            )
        finally:
            for pending in batch:
                pending.done.set()

    def _transaction(self, session: Session, batch: list[Pending]) -> None:
        folders: set[Path] = set()
        with session.begin():
            if self._sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            if len(batch) == 1:  # the transaction is the instance's own: no savepoint
                self._record_alone(session, batch[0], folders)
            else:
                for pending in batch:
                    self._record(session, pending, folders)
            # The files' bytes and their renames are durable before the rows commit.
            placed = [self.spool.root / p.relative for p in batch if p.incoming.kept]
            make_durable(self.spool.root, placed, folders)

    def _placer(self, pending: Pending, folders: set[Path]) -> Callable[[bool], None]:
        def place(new: bool) -> None:
            folders.add(move_into(self.spool, pending.incoming, pending.relative))
            pending.placed_new = pending.placed_new or new

        return place

    def _record_alone(self, session: Session, pending: Pending, folders: set[Path]) -> None:
        place = self._placer(pending, folders)
        try:
            pending.outcome, pending.key = record(
                session, pending.header, pending.received, place, self.cache
            )
        except IdentityConflict as exc:  # raised before anything is written
            pending.error = exc

    def _record(self, session: Session, pending: Pending, folders: set[Path]) -> None:
        place = self._placer(pending, folders)
        for attempt in range(_ATTEMPTS):
            try:
                with session.begin_nested():
                    pending.outcome, pending.key = record(
                        session, pending.header, pending.received, place, self.cache
                    )
                return
            except IntegrityError as exc:
                # Another writer created the patient/study/series meanwhile, or a cached
                # row went away: look again, without the cache.
                self._undo(pending)
                self.cache.forget(pending.header.series_instance_uid)
                if attempt == _ATTEMPTS - 1:
                    pending.error = exc
            except IdentityConflict as exc:
                pending.error = exc
                return
            except Exception as exc:  # noqa: BLE001 - this instance fails, the round goes on
                self._undo(pending)
                pending.error = exc
                return

    def _undo(self, pending: Pending) -> None:
        """A new instance whose row did not commit leaves the spool (a replaced file stays:
        its row still describes that path)."""
        if pending.placed_new:
            move_back(self.spool, pending.incoming, pending.relative)
            pending.placed_new = False
        pending.outcome = pending.key = None
