"""DICOM TLS for the Storage SCP (PS3.15 B.1): the server context and its listener.

The context offers TLS 1.2 or later with the node's certificate; given a CA file it
verifies the certificates clients present, and may require one. The listener does each
TLS handshake in the connection's own thread, bounded by the ACSE timeout: pynetdicom's
server would do it in its accept loop, where one silent connection stops every other.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(
    cert_file: Path,
    key_file: Path,
    ca_file: Path | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """The server's TLS context; a presented client certificate is verified against
    ``ca_file``, and one is required when ``require_client_cert``."""
    if require_client_cert and ca_file is None:
        raise ValueError("requiring client certificates needs a CA file to verify them")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the handshake moved into the connection thread."""

    def __init__(self, *args: Any, tls_context: ssl.SSLContext, handshake_timeout: float,
                 **kwargs: Any) -> None:  # fmt: skip
        self.tls_context = tls_context
        self.handshake_timeout = handshake_timeout
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            secured = self.tls_context.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
        except OSError as exc:
            log.warning("TLS from %s refused: %s", client_address[0], exc)
            self.shutdown_request(request)
            return
        try:
            secured.settimeout(self.handshake_timeout)
            secured.do_handshake()
            secured.settimeout(None)
        except (OSError, ValueError) as exc:
            log.warning("TLS handshake with %s failed: %s", client_address[0], exc)
            secured.close()
            return
        peer = secured.getpeercert()
        if peer:
            log.info("TLS peer %s: %s", client_address[0], dict(x[0] for x in peer["subject"]))
        super().process_request_thread(secured, client_address)


def start_tls_server(
    ae: AE,
    address: tuple[str, int],
    context: ssl.SSLContext,
    evt_handlers: list[EventHandlerType],
    handshake_timeout: float,
) -> TlsAssociationServer:
    """Serve ``ae`` over TLS on ``address`` in a background thread, as
    ``AE.start_server(block=False)`` does for plain TCP."""
    server = ae.make_server(
        address,
        evt_handlers=evt_handlers,
        server_class=TlsAssociationServer,
        tls_context=context,
        handshake_timeout=handshake_timeout,
    )
    thread = threading.Thread(target=server.serve_forever, name="TlsAcceptor", daemon=True)
    thread.start()
    # AssociationServer.shutdown removes itself from this list, as start_server adds it.
    ae._servers.append(server)  # noqa: SLF001
    return server
