"""The C-STORE store path: from the file pynetdicom wrote as the data set arrived to
a kept, indexed instance, or a refusal with a named status.

The hot path reads the header only (no pixel data, large values deferred); the
digest was computed while the bytes were written (:class:`node.storage.IncomingFile`).
Order, for crash safety: the file is fsynced (here, in the association's thread), then
renamed into place and its folder fsynced before its row commits (by the group
committer, :mod:`node.group_commit`, which shares one round of fsyncs and one
transaction among the instances ready together); a crash in between leaves an
unindexed file that :func:`sweep_at_start` removes, and a failed transaction moves it
back out at once. Success is answered only once both are durable.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom.events import Event

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

_UNREADABLE = (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError)


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
        self.incoming.install()  # data sets stream to spool files as they arrive
        self.committer.start()

    def stop(self) -> None:
        self.committer.stop()
        self.incoming.uninstall()

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


def handle_store(event: Event, store: StorePath) -> int | Dataset:
    """Keep one instance pynetdicom wrote to the spool, or refuse it with a named status."""
    incoming = store.incoming.claim(event.dataset_path)
    if incoming is None:
        log.error("no incoming file for a C-STORE from %s", event.assoc.requestor.ae_title)
        return failure(StoreStatus.OUT_OF_RESOURCES, "data set was not received into the spool")
    try:
        return _store(event, store, incoming)
    finally:
        incoming.discard()  # everything not kept goes: refused, identical, kept first


def _store(event: Event, store: StorePath, incoming: IncomingFile) -> int | Dataset:
    calling = str(event.assoc.requestor.ae_title).strip()
    if incoming.refusal is not None:
        log.warning("refused an instance from %s: %s", calling, incoming.refusal)
        status = (
            StoreStatus.OUT_OF_RESOURCES
            if incoming.refusal == DISK_NEARLY_FULL
            else StoreStatus.INSTANCE_TOO_LARGE
        )
        return failure(status, incoming.refusal)
    try:
        incoming.close()
        header = store.read_header(incoming, str(event.context.transfer_syntax))
    except InflatedTooLarge as exc:
        log.warning("refused a deflated instance from %s: %s", calling, exc)
        return failure(StoreStatus.INSTANCE_TOO_LARGE, f"{exc} (max inflated bytes)")
    except InvalidUID as exc:
        log.warning("refused an instance from %s: %s", calling, exc)
        return failure(StoreStatus.CANNOT_UNDERSTAND, str(exc))
    except _UNREADABLE as exc:
        log.warning("refused unreadable data from %s: %s", calling, exc)
        return failure(StoreStatus.CANNOT_UNDERSTAND, f"unreadable data set: {exc}")
    affected = str(event.request.AffectedSOPInstanceUID or "")
    if affected and affected != header.sop_instance_uid:
        return failure(
            StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            "SOP Instance UID differs from Affected SOP Instance UID",
        )
    return _index(store, incoming, header, calling)


def _index(
    store: StorePath, incoming: IncomingFile, header: InstanceHeader, calling: str
) -> int | Dataset:
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
        return failure(StoreStatus.IDENTITY_CONFLICT, str(exc))
    except OSError as exc:
        log.error("could not keep %s: %s", header.sop_instance_uid, exc)
        return failure(StoreStatus.OUT_OF_RESOURCES, f"cannot store: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - database down or similar: ask the sender to retry
        log.exception("could not index %s", header.sop_instance_uid)
        return failure(StoreStatus.OUT_OF_RESOURCES, f"cannot index: {type(exc).__name__}")
    if outcome is not Outcome.STORED:
        log.info("%s from %s: %s", header.sop_instance_uid, calling, outcome.value)
    return int(StoreStatus.SUCCESS)


def sweep_at_start(settings: Settings, sessions: SessionFactory) -> int:
    """Remove what a crash left in the spool; call before the SCP listens."""
    removed = sweep_spool(settings.spool_dir, indexed_paths(sessions))
    for path in removed:
        log.warning("removed %s: left by an interrupted receive, never acknowledged", path)
    return len(removed)
