"""The UPS DIMSE service: the UPS AE's listeners (plain TCP, DICOM TLS) and its event
dispatcher, started and stopped together by ``ainode serve``.

The AE accepts the five UPS SOP classes (Push, Pull, Watch, Event, Query) as SCP on
``AINODE_UPS_PORT`` (0: off) and ``AINODE_UPS_TLS_PORT`` (the Storage SCP's TLS
context, ``node.tls``), under its own title (``AINODE_UPS_AE_TITLE``, the node's by
default). Who may associate is the node's rule (``node.admission``: calling AE title and
host allow-list, ``AINODE_ALLOWED_CALLING_AETS``; the limits of associations at once).
The Storage SCP is the node's own acceptor (``node.acceptor``) and separate.
"""

from __future__ import annotations

import logging
import ssl

from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES
from pynetdicom.transport import ThreadedAssociationServer

from node.admission import Admission, parse_rules
from node.db.session import SessionFactory
from node.settings import Settings
from node.tls import server_context
from node.ups.attributes import UPS_EVENT, UPS_PULL, UPS_PUSH, UPS_QUERY, UPS_WATCH
from node.ups.book import WorkitemBook
from node.ups.dimse_handlers import AssociationAdmission, handlers
from node.ups.event_dispatcher import EventDispatcher, SendTimeouts

log = logging.getLogger(__name__)

UPS_SOP_CLASSES = (UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_EVENT, UPS_QUERY)


class UpsService:
    """The workitem book served over DIMSE, and its events sent."""

    def __init__(self, settings: Settings, sessions: SessionFactory) -> None:
        self.settings = settings
        self.ae_title = settings.ups_ae_title or settings.ae_title
        receivers = settings.event_receivers()
        self.book = WorkitemBook(sessions)
        self.dispatcher = EventDispatcher(
            self.book,
            receivers,
            self.ae_title,
            retry_seconds=settings.ups_event_retry_seconds,
            retry_max_seconds=settings.ups_event_retry_max_seconds,
            poll_seconds=settings.ups_event_poll_seconds,
            timeouts=SendTimeouts(
                settings.dicom_acse_timeout,
                settings.dicom_dimse_timeout,
                settings.dicom_network_timeout,
            ),
        )
        self.book.on_commit = self.dispatcher.wake  # events are sent once committed
        self.admission = AssociationAdmission(
            Admission(
                self.ae_title,
                parse_rules(settings.allowed_calling_aets),
                settings.dicom_max_associations,
                settings.dicom_max_associations_per_aet,
            )
        )
        self._handlers = handlers(self.book, receivers, self.admission)
        self._servers: list[ThreadedAssociationServer] = []
        self.ports: list[int] = []  # where it listens (a port 0 asked for becomes real)

    @property
    def wanted(self) -> bool:
        return self.settings.ups_port > 0 or self.settings.ups_tls_port is not None

    def _ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        for uid in UPS_SOP_CLASSES:
            ae.add_supported_context(uid, DEFAULT_TRANSFER_SYNTAXES)
        ae.maximum_associations = self.settings.dicom_max_associations
        ae.acse_timeout = self.settings.dicom_acse_timeout
        ae.dimse_timeout = self.settings.dicom_dimse_timeout
        ae.network_timeout = self.settings.dicom_network_timeout
        ae.maximum_pdu_size = self.settings.max_pdu_bytes
        return ae

    def _listen(self, port: int, context: ssl.SSLContext | None) -> None:
        server = self._ae().start_server(
            (self.settings.dicom_bind, port),
            block=False,
            evt_handlers=self._handlers,
            ssl_context=context,
        )
        self._servers.append(server)
        self.ports.append(server.server_address[1])
        kind = " (TLS)" if context is not None else ""
        log.info("UPS SCP %s%s listening on %s:%s", self.ae_title, kind, *server.server_address)

    def start(self) -> None:
        """Listen (when a port is set) and start sending events."""
        settings = self.settings
        if settings.ups_port > 0:
            self._listen(settings.ups_port, None)
        if settings.ups_tls_port is not None:
            if settings.dicom_tls_cert is None or settings.dicom_tls_key is None:
                raise ValueError("AINODE_UPS_TLS_PORT needs AINODE_DICOM_TLS_CERT and _KEY")
            context = server_context(
                settings.dicom_tls_cert,
                settings.dicom_tls_key,
                settings.dicom_tls_ca,
                settings.dicom_tls_require_client_cert,
            )
            self._listen(settings.ups_tls_port, context)
        self.dispatcher.start()

    @property
    def listening(self) -> bool:
        """Every listener asked for is up, and the event dispatcher runs."""
        asked = int(self.settings.ups_port > 0) + int(self.settings.ups_tls_port is not None)
        return self.dispatcher.alive and len(self._servers) == asked

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
        self._servers.clear()
        self.dispatcher.stop()
