"""The DICOM Storage SCP: associations, C-ECHO, C-STORE and storage commitment reports.

A C-STORE is answered success only once the bytes as received are durable in the
spool and indexed (the store path itself is node.store); unreadable or
unidentifiable data gets a failure status and is not kept. Nothing here decodes
pixel data. An archive that commits to results the node
sent reports it here (N-EVENT-REPORT, on an association the archive opens); the
report is handed to the callback the node gave, and answered once it is recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from node.admission import Admission, parse_rules
from node.db.session import SessionFactory
from node.delivery.commitment import ReportCallback, accept_reports, event_report_handler
from node.network import set_tcp_nodelay
from node.settings import Settings
from node.status import StoreStatus
from node.store import StorePath, handle_store
from node.tls import server_context, start_tls_server

log = logging.getLogger(__name__)


def handle_echo(_event: Event) -> int:
    return int(StoreStatus.SUCCESS)


def build_application_entity(settings: Settings, commitment_reports: bool = False) -> AE:
    """An AE accepting every storage SOP class in every transfer syntax pydicom knows,
    and, when asked, storage commitment reports from archives."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu_bytes  # bounds what one PDU holds in memory
    # Who may associate, and how many, is node.admission's (EVT_REQUESTED); pynetdicom's
    # own count includes connections that never asked, so it is only the backstop here.
    ae.require_called_aet = True
    ae.maximum_associations = settings.dicom_max_connections
    # The ACSE timeout is also pynetdicom's ARTIM: a connection silent that long is closed.
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    ae.network_timeout = settings.dicom_network_timeout
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    if commitment_reports:
        accept_reports(ae)
    return ae


def build_admission(settings: Settings) -> Admission:
    return Admission(
        settings.ae_title,
        parse_rules(settings.allowed_calling_aets),
        settings.dicom_max_associations,
        settings.dicom_max_associations_per_aet,
    )


class StorageSCP:
    """The listening side of the node: one AE, on a plain TCP port, a TLS port or both."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        on_commitment: ReportCallback | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.on_commitment = on_commitment
        self.store = StorePath(settings, sessions)  # the C-STORE path, node.store
        self.spool = self.store.spool
        self.admission = build_admission(settings)
        self._server: ThreadedAssociationServer | None = None  # plain TCP
        self._tls_server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        self.spool.ensure_dir(Path("."))
        self.store.start()  # incoming files and the group committer (node.store)
        ae = build_application_entity(self.settings, self.on_commitment is not None)
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, self.admission.on_requested),
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [self.store]),
            (evt.EVT_CONN_CLOSE, self.store.incoming.abandon),
        ]
        if self.on_commitment is not None:
            handlers.append((evt.EVT_N_EVENT_REPORT, event_report_handler(self.on_commitment)))
        self._start_listeners(ae, handlers)

    def _start_listeners(self, ae: AE, handlers: list[EventHandlerType]) -> None:
        settings = self.settings
        if settings.dicom_tls_port is not None:
            assert settings.dicom_tls_cert is not None and settings.dicom_tls_key is not None
            context = server_context(
                settings.dicom_tls_cert,
                settings.dicom_tls_key,
                settings.dicom_tls_ca,
                settings.dicom_tls_require_client_cert,
            )
            address = (settings.dicom_bind, settings.dicom_tls_port)
            self._tls_server = start_tls_server(
                ae, address, context, handlers, settings.dicom_acse_timeout
            )
            log.info("Storage SCP %s (TLS) listening on %s:%s", ae.ae_title, *address)
        if settings.dicom_plaintext:
            address = (settings.dicom_bind, settings.dicom_port)
            self._server = ae.start_server(address, block=False, evt_handlers=handlers)
            log.info("Storage SCP %s listening on %s:%s", ae.ae_title, *address)

    @property
    def listening(self) -> bool:
        """Every listener the settings ask for is up."""
        wanted = [
            (self.settings.dicom_plaintext, self._server),
            (self.settings.dicom_tls_port is not None, self._tls_server),
        ]
        return all(_is_listening(server) for asked, server in wanted if asked)

    def stop(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
        self._server = self._tls_server = None
        self.store.stop()


def _is_listening(server: ThreadedAssociationServer | None) -> bool:
    return server is not None and server.socket is not None and server.socket.fileno() >= 0
