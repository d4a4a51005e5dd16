"""Listening for associations: one socket per listener (plain TCP or DICOM TLS), one
thread per connection.

The accept loop only accepts: the TLS handshake (bounded by the ACSE timeout) and
everything after it happen in the connection's thread, so one silent or slow peer
holds nobody else up. Connections over ``max_connections`` (silent ones included) are
refused (their requests answered with a transient local limit, and past
:data:`REFUSING` more closed at once); who may associate is judged later, on the association request
(:mod:`node.admission`). ``stop`` closes the listener and every connection, and waits
for their threads.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading

from node.acceptor.association import Association
from node.acceptor.messages import AcceptorServices
from node.acceptor.record import AssociationRecord
from node.network import set_tcp_nodelay_on

log = logging.getLogger(__name__)

# Connections over the ceiling still get a thread, to read their request and refuse it
# by name (each lives at most the ACSE timeout); past this many more, they are closed.
REFUSING = 256


class AssociationListener:
    """Accepts connections on ``address`` and serves each as an :class:`Association`."""

    def __init__(
        self,
        address: tuple[str, int],
        services: AcceptorServices,
        max_connections: int,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.services = services
        self.max_connections = max_connections
        self.tls_context = tls_context
        self.socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        name = "dicom-tls-accept" if self.tls_context else "dicom-accept"
        self._thread = threading.Thread(target=self._accept_loop, name=name, daemon=True)
        self._thread.start()

    @property
    def listening(self) -> bool:
        return (
            self.socket is not None
            and self.socket.fileno() >= 0
            and self._thread is not None
            and self._thread.is_alive()
        )

    def connections(self) -> list[socket.socket]:
        """The sockets of the connections being served now."""
        with self._lock:
            return list(self._connections)

    def _accept_loop(self) -> None:
        assert self.socket is not None
        while not self._stopping:
            try:
                conn, peer = self.socket.accept()
            except OSError:
                break  # the listener was closed: stop
            thread = self._thread_for(conn, peer)
            if thread is None:
                log.warning("closing a connection from %s: %d connections already",
                            peer[0], self.max_connections + REFUSING)  # fmt: skip
                conn.close()
            else:
                thread.start()

    def _thread_for(self, conn: socket.socket, peer: tuple) -> threading.Thread | None:
        """The thread to serve ``conn``; over the ceiling, one that only refuses its
        request (as a transient local limit), and past :data:`REFUSING` more, none."""
        with self._lock:
            held = len(self._connections)
            if held >= self.max_connections + REFUSING:
                return None
            over = held >= self.max_connections
            thread = threading.Thread(
                target=self._serve, args=(conn, peer, over), name=f"dicom-{peer[0]}", daemon=True
            )
            self._connections[conn] = thread
            return thread

    def _serve(self, conn: socket.socket, peer: tuple, over_ceiling: bool) -> None:
        record = AssociationRecord(address=str(peer[0]), port=int(peer[1]))
        try:
            set_tcp_nodelay_on(conn)
            sock = self._secure(conn, record) if self.tls_context else conn
            if sock is not None:
                Association(sock, record, self.services, over_ceiling).run()
            elif self.services.on_ended is not None:  # the handshake failed: on record too
                self.services.on_ended(record)
        except Exception:  # noqa: BLE001 - one connection's fault must not stop the listener
            log.exception("association from %s failed", record.address)
            conn.close()
        finally:
            with self._lock:
                self._connections.pop(conn, None)

    def _secure(self, conn: socket.socket, record: AssociationRecord) -> ssl.SSLSocket | None:
        """The TLS handshake, in this connection's thread, bounded by the ACSE timeout."""
        assert self.tls_context is not None
        try:
            conn.settimeout(self.services.acse_timeout)
            secured = self.tls_context.wrap_socket(conn, server_side=True)
        except (OSError, ValueError) as exc:
            log.warning("TLS handshake with %s failed: %s", record.address, exc)
            conn.close()
            record.outcome = f"TLS handshake failed: {exc}"
            return None
        subject = (secured.getpeercert() or {}).get("subject")
        if subject:
            record.tls_identity = ",".join(f"{k}={v}" for rdn in subject for k, v in rdn)
            log.info("TLS peer %s: %s", record.address, record.tls_identity)
        return secured

    def stop_accepting(self) -> None:
        """Close the listening socket; the connections being served go on."""
        self._stopping = True
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self.socket.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def shutdown(self) -> None:
        """Stop accepting, close every connection, wait for their threads."""
        self.stop_accepting()
        with self._lock:
            connections = dict(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in connections.values():
            thread.join(timeout=10)
