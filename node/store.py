"""The C-STORE store path: from the file the acceptor wrote as the data set arrived to
a kept, indexed instance, or a refusal with a named status.

The hot path reads the header only (no pixel data, large values deferred); the
digest was computed while the bytes were written (:class:`node.storage.IncomingFile`).
Order, for crash safety: the file is renamed into place, and its bytes and the rename
made durable, before its row commits (by the group committer,
:mod:`node.group_commit`, which shares one round of syncs and one transaction among
the instances ready together); a crash in between leaves an
unindexed file that :func:`sweep_at_start` removes, and a failed transaction moves it
back out at once. Success is answered only once both are durable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from node.db.session import SessionFactory
from node.group_commit import GroupCommitter
from node.incoming import DISK_NEARLY_FULL, IncomingSpool
from node.index import IdentityConflict, InstanceHeader, Outcome, Received, indexed_paths
from node.inflate import InflatedTooLarge, deflated_header
from node.settings import Settings
from node.status import StoreStatus
from node.storage import DurableFolder, IncomingFile, sweep_spool
from node.uids import InvalidUID

log = logging.getLogger(__name__)


def failure(status: StoreStatus, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    # LO holds 64 characters, and a backslash would split it into several values.
    ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


class StorePath:
    """What ``handle_store`` needs: the settings, the spool, the incoming files, the
    committer that indexes them (``start`` before the SCP listens, ``stop`` after)."""

    def __init__(self, settings: Settings, sessions: SessionFactory) -> None:
        self.settings = settings
        self.sessions = sessions
        self.spool = DurableFolder(settings.spool_dir)
        self.incoming = IncomingSpool(settings)
        self.committer = GroupCommitter(sessions, self.spool)

    def start(self) -> None:
        self.incoming.prepare()
        self.committer.start()

    def stop(self) -> None:
        self.committer.stop()

    def read_header(self, incoming: IncomingFile, transfer_syntax: str) -> InstanceHeader:
        if transfer_syntax == DeflatedExplicitVRLittleEndian:
            return deflated_header(
                incoming.path,
                self.settings.max_inflated_bytes,
                self.incoming.folder,
                lambda ds: InstanceHeader.from_dataset(ds, transfer_syntax),
            )
        ds = dcmread(incoming.path, stop_before_pixels=True, defer_size=1 << 20)
        return InstanceHeader.from_dataset(ds, transfer_syntax)


@dataclass(frozen=True)
class StoreRequest:
    """One C-STORE whose data set has arrived in ``incoming``."""

    calling_ae_title: str
    transfer_syntax: str
    affected_sop_instance_uid: str
    incoming: IncomingFile


@dataclass(frozen=True)
class StoreVerdict:
    """The status to answer a C-STORE with, and the header of an instance it kept."""

    status: int | Dataset
    header: InstanceHeader | None = None


def handle_store(store: StorePath, request: StoreRequest) -> StoreVerdict:
    """Keep one received instance, or refuse it with a named status; the incoming file
    goes in every case but a kept one (refused, identical, kept first)."""
    try:
        return _store(store, request)
    finally:
        request.incoming.discard()


def _store(store: StorePath, request: StoreRequest) -> StoreVerdict:
    calling, incoming = request.calling_ae_title, request.incoming
    if incoming.refusal is not None:
        log.warning("refused an instance from %s: %s", calling, incoming.refusal)
        status = (
            StoreStatus.OUT_OF_RESOURCES
            if incoming.refusal == DISK_NEARLY_FULL
            else StoreStatus.INSTANCE_TOO_LARGE
        )
        return StoreVerdict(failure(status, incoming.refusal))
    try:
        incoming.close()
    except OSError as exc:
        log.error("could not write an instance from %s: %s", calling, exc)
        return StoreVerdict(failure(StoreStatus.OUT_OF_RESOURCES, f"cannot store: {exc}"))
    try:
        header = store.read_header(incoming, request.transfer_syntax)
    except InflatedTooLarge as exc:
        log.warning("refused a deflated instance from %s: %s", calling, exc)
        return StoreVerdict(failure(StoreStatus.INSTANCE_TOO_LARGE, f"{exc} (max inflated bytes)"))
    except InvalidUID as exc:
        log.warning("refused an instance from %s: %s", calling, exc)
        return StoreVerdict(failure(StoreStatus.CANNOT_UNDERSTAND, str(exc)))
    # pydicom raises many kinds of error on a broken header (InvalidDicomError, ValueError,
    # EOFError, KeyError, and for an unknown VR the error meant for unwritten code): every
    # one of them means the sender's data cannot be read, and gets this status.
    except Exception as exc:  # noqa: BLE001
        log.warning("refused unreadable data from %s: %s", calling, exc)
        return StoreVerdict(failure(StoreStatus.CANNOT_UNDERSTAND, f"unreadable data set: {exc}"))
    affected = request.affected_sop_instance_uid
    if affected and affected != header.sop_instance_uid:
        return StoreVerdict(
            failure(
                StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP Instance UID differs from Affected SOP Instance UID",
            )
        )
    return _index(store, incoming, header, calling)


def _index(
    store: StorePath, incoming: IncomingFile, header: InstanceHeader, calling: str
) -> StoreVerdict:
    relative = Path(header.spool_path)
    received = Received(
        size=incoming.size,
        digest=incoming.hexdigest(),
        calling_aet=calling,
        duplicate_policy=store.settings.duplicate_policy,
    )
    try:
        outcome = store.committer.submit(header, received, incoming, relative)
    except IdentityConflict as exc:
        log.warning("refused %s from %s: %s", header.sop_instance_uid, calling, exc)
        return StoreVerdict(failure(StoreStatus.IDENTITY_CONFLICT, str(exc)))
    except OSError as exc:
        log.error("could not keep %s: %s", header.sop_instance_uid, exc)
        return StoreVerdict(
            failure(StoreStatus.OUT_OF_RESOURCES, f"cannot store: {exc.strerror or exc}")
        )
    except Exception as exc:  # noqa: BLE001 - database down or similar: ask the sender to retry
        log.exception("could not index %s", header.sop_instance_uid)
        return StoreVerdict(
            failure(StoreStatus.OUT_OF_RESOURCES, f"cannot index: {type(exc).__name__}")
        )
    if outcome is not Outcome.STORED:
        log.info("%s from %s: %s", header.sop_instance_uid, calling, outcome.value)
    return StoreVerdict(int(StoreStatus.SUCCESS), header)


def sweep_at_start(settings: Settings, sessions: SessionFactory) -> int:
    """Remove what a crash left in the spool; call before the SCP listens."""
    removed = sweep_spool(settings.spool_dir, indexed_paths(sessions))
    for path in removed:
        log.warning("removed %s: left by an interrupted receive, never acknowledged", path)
    return len(removed)
