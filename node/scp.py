"""The DICOM Storage SCP: its listeners, what they accept, and what they share.

Associations are served by the node's own acceptor (:mod:`node.acceptor`): C-ECHO,
C-STORE and, when the node asks archives for storage commitment, their reports
(N-EVENT-REPORT, on an association the archive opens). A C-STORE is answered success
only once the bytes as received are durable in the spool and indexed (the store path
itself is :mod:`node.store`); unreadable or unidentifiable data gets a failure status
and is not kept. Nothing here decodes pixel data.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification

from node.acceptor.messages import AcceptorServices
from node.acceptor.pool import ReceiverPool
from node.acceptor.record import AssociationRecord
from node.acceptor.server import AssociationListener
from node.admission import Admission, parse_rules
from node.db.session import SessionFactory
from node.delivery.commitment import ReportCallback, report_contexts
from node.settings import Settings
from node.store import StorePath
from node.tls import server_context

log = logging.getLogger(__name__)


def supported_contexts(commitment_reports: bool = False) -> list[PresentationContext]:
    """Every storage SOP class and Verification in every transfer syntax pydicom knows,
    and, when asked, storage commitment reports from archives."""
    contexts = [build_context(Verification, ALL_TRANSFER_SYNTAXES)]
    contexts += [
        build_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts
    ]
    if commitment_reports:
        contexts += report_contexts()
    return contexts


def build_admission(settings: Settings) -> Admission:
    return Admission(
        settings.ae_title,
        parse_rules(settings.allowed_calling_aets),
        settings.dicom_max_associations,
        settings.dicom_max_associations_per_aet,
    )


def log_association(record: AssociationRecord) -> None:
    log.info(
        "association %s -> %s from %s: %s, %d stored, %d refused",
        record.calling_ae_title or "?",
        record.called_ae_title or "?",
        record.address,
        record.outcome,
        record.stored,
        record.refused,
    )


class StorageSCP:
    """The listening side of the node: one AE, on a plain TCP port, a TLS port or both."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        on_commitment: ReportCallback | None = None,
        on_association: Callable[[AssociationRecord], None] = log_association,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.on_commitment = on_commitment
        self.on_association = on_association
        self.store = StorePath(settings, sessions)  # the C-STORE path, node.store
        self.spool = self.store.spool
        self.admission = build_admission(settings)
        self._server: AssociationListener | None = None  # plain TCP
        self._tls_server: AssociationListener | None = None
        self.pool: ReceiverPool | None = None  # receiving processes, when configured

    def _services(self, pool: ReceiverPool | None) -> AcceptorServices:
        settings = self.settings
        return AcceptorServices(
            admission=self.admission,
            supported=supported_contexts(self.on_commitment is not None),
            max_pdu=settings.max_pdu_bytes,
            acse_timeout=settings.dicom_acse_timeout,
            network_timeout=settings.dicom_network_timeout,
            store=self.store,
            on_report=self.on_commitment,
            on_ended=self.on_association,
            pool=pool,
        )

    def start(self) -> None:
        self.spool.ensure_dir(Path("."))
        self.store.start()  # incoming files and the group committer (node.store)
        settings = self.settings
        if settings.dicom_receive_processes > 0:
            self.pool = ReceiverPool(settings, settings.dicom_receive_processes)
            self.pool.start()
        if settings.dicom_tls_port is not None:
            assert settings.dicom_tls_cert is not None and settings.dicom_tls_key is not None
            context = server_context(
                settings.dicom_tls_cert,
                settings.dicom_tls_key,
                settings.dicom_tls_ca,
                settings.dicom_tls_require_client_cert,
            )
            address = (settings.dicom_bind, settings.dicom_tls_port)
            # TLS state cannot move to another process: TLS associations are served here.
            self._tls_server = self._listen(address, self._services(None), context)
            log.info("Storage SCP %s (TLS) listening on %s:%s", settings.ae_title, *address)
        if settings.dicom_plaintext:
            address = (settings.dicom_bind, settings.dicom_port)
            self._server = self._listen(address, self._services(self.pool), None)
            log.info("Storage SCP %s listening on %s:%s", settings.ae_title, *address)

    def _listen(self, address: tuple[str, int], services: AcceptorServices,
                context: ssl.SSLContext | None) -> AssociationListener:  # fmt: skip
        listener = AssociationListener(
            address, services, self.settings.dicom_max_connections, context
        )
        listener.start()
        return listener

    @property
    def listening(self) -> bool:
        """Every listener the settings ask for is up."""
        wanted = [
            (self.settings.dicom_plaintext, self._server),
            (self.settings.dicom_tls_port is not None, self._tls_server),
        ]
        return all(server is not None and server.listening for asked, server in wanted if asked)

    def stop(self) -> None:
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        for server in servers:
            server.stop_accepting()
        if self.pool is not None:  # its associations end there, and their threads here
            self.pool.stop()
            self.pool = None
        for server in servers:
            server.shutdown()
        self._server = self._tls_server = None
        self.store.stop()
