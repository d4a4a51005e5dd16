"""The DICOM Storage SCP: associations, C-ECHO, C-STORE and storage commitment reports.

A C-STORE is answered success only once the bytes as received are durable in the
spool and indexed; unreadable or unidentifiable data gets a failure status and is not
kept. Nothing here decodes pixel data. An archive that commits to results the node
sent reports it here (N-EVENT-REPORT, on an association the archive opens); the
report is handed to the callback the node gave, and answered once it is recorded.
"""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from node.db.session import SessionFactory
from node.delivery.commitment import ReportCallback, accept_reports, event_report_handler
from node.index import InstanceHeader, index_instance
from node.network import set_tcp_nodelay
from node.settings import Settings
from node.status import StoreStatus
from node.storage import DurableFolder
from node.uids import InvalidUID

log = logging.getLogger(__name__)


def _failure(status: StoreStatus, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    # LO holds 64 characters, and a backslash would split it into several values.
    ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


def read_header(encoded_file: bytes) -> Dataset:
    """Parse everything but the pixel data of an encoded DICOM file."""
    return dcmread(BytesIO(encoded_file), stop_before_pixels=True)


def handle_store(event: Event, spool: DurableFolder, sessions: SessionFactory) -> int | Dataset:
    """Keep one instance: parse its header, write its bytes durably, index it."""
    try:
        encoded = event.encoded_dataset(include_meta=True)
        header_ds = read_header(encoded)
        transfer_syntax = str(event.context.transfer_syntax)
        header = InstanceHeader.from_dataset(header_ds, transfer_syntax)
    except InvalidUID as exc:
        log.warning("refused an instance from %s: %s", event.assoc.requestor.ae_title, exc)
        return _failure(StoreStatus.CANNOT_UNDERSTAND, str(exc))
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
        log.warning("refused unreadable data from %s: %s", event.assoc.requestor.ae_title, exc)
        return _failure(StoreStatus.CANNOT_UNDERSTAND, f"unreadable data set: {exc}")
    affected = str(event.request.AffectedSOPInstanceUID or "")
    if affected and affected != header.sop_instance_uid:
        return _failure(
            StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            "SOP Instance UID differs from Affected SOP Instance UID",
        )
    calling = str(event.assoc.requestor.ae_title).strip()
    try:
        size = spool.write(Path(header.spool_path), encoded)
        index_instance(sessions, header, size, calling)
    except OSError as exc:
        log.error("could not keep %s: %s", header.sop_instance_uid, exc)
        return _failure(StoreStatus.OUT_OF_RESOURCES, f"cannot store: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - database down or similar: ask the sender to retry
        log.exception("could not index %s", header.sop_instance_uid)
        return _failure(StoreStatus.OUT_OF_RESOURCES, f"cannot index: {type(exc).__name__}")
    return int(StoreStatus.SUCCESS)


def handle_echo(_event: Event) -> int:
    return int(StoreStatus.SUCCESS)


def build_application_entity(settings: Settings, commitment_reports: bool = False) -> AE:
    """An AE accepting every storage SOP class in every transfer syntax pydicom knows,
    and, when asked, storage commitment reports from archives."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = 0  # unlimited: fewer, larger PDUs
    ae.require_called_aet = False
    if settings.allowed_calling_aets:
        ae.require_calling_aet = list(settings.allowed_calling_aets)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    if commitment_reports:
        accept_reports(ae)
    return ae


class StorageSCP:
    """The listening side of the node: one AE on one port."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        on_commitment: ReportCallback | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.on_commitment = on_commitment
        self.spool = DurableFolder(settings.spool_dir)
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        self.spool.ensure_dir(Path("."))
        ae = build_application_entity(self.settings, self.on_commitment is not None)
        handlers = [
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [self.spool, self.sessions]),
        ]
        if self.on_commitment is not None:
            handlers.append((evt.EVT_N_EVENT_REPORT, event_report_handler(self.on_commitment)))
        self._server = ae.start_server(
            (self.settings.dicom_bind, self.settings.dicom_port),
            block=False,
            evt_handlers=handlers,
        )
        log.info(
            "Storage SCP %s listening on %s:%s",
            self.settings.ae_title,
            self.settings.dicom_bind,
            self.settings.dicom_port,
        )

    @property
    def listening(self) -> bool:
        server = self._server
        return server is not None and server.socket is not None and server.socket.fileno() >= 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
