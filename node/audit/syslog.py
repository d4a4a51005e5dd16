"""Audit messages to a syslog collector: RFC 5424 over UDP (RFC 5426), TCP (RFC 6587
octet counting) or TLS (RFC 5425), from a bounded queue drained by one thread.

PS3.15 A.6 and IHE ATNA fix the header: facility 10 (security/authorization), MSGID
``DICOM+RFC3881``, no structured data, and the audit XML as a UTF-8 message with its
BOM. The caller never waits on the network: ``emit`` only queues, and a full queue
drops the message (counted, logged), since the database row is the durable record.
A failed send is retried with backoff (reconnecting) until it goes or the emitter
closes, so a collector that restarts loses nothing that fitted in the queue.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import re
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

Transport = Literal["udp", "tcp", "tls"]
DEFAULT_PORTS: dict[str, int] = {"udp": 514, "tcp": 601, "tls": 6514}
AUTHPRIV = 10  # "security/authorization messages", the facility ATNA asks for
NOTICE, WARNING = 5, 4  # severities: a success, a failure
MSGID = "DICOM+RFC3881"  # PS3.15 A.6
APP_NAME = "ainode"
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SyslogAddress:
    """Where audit messages go: ``udp://host:port``, ``tcp://host:port``, ``tls://host:port``."""

    transport: Transport
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> SyslogAddress:
        parts = urlsplit(text.strip())
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"syslog address must be udp|tcp|tls://host[:port], not {text!r}")
        transport: Transport = parts.scheme  # type: ignore[assignment]
        return cls(transport, parts.hostname, parts.port or DEFAULT_PORTS[transport])


def _header_field(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, "-" when empty."""
    cleaned = re.sub(r"[^\x21-\x7e]", "_", text)[:limit]
    return cleaned or "-"


def rfc5424(
    message: bytes,
    *,
    timestamp: datetime,
    hostname: str,
    procid: str,
    severity: int = NOTICE,
    facility: int = AUTHPRIV,
    app_name: str = APP_NAME,
    msgid: str = MSGID,
) -> bytes:
    """One syslog message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG``."""
    moment = timestamp.astimezone(UTC) if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    stamp = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    header = " ".join(
        (
            f"<{facility * 8 + severity}>1",
            stamp,
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid, 128),
            _header_field(msgid, 32),
            "-",  # no STRUCTURED-DATA
        )
    )
    return header.encode("ascii") + b" " + BOM + message


def client_context(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """TLS 1.2+ verifying the collector against ``ca_file`` (or the system's CAs), with
    the node's own certificate when given (RFC 5425 mutual authentication)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    return context


class SyslogSender:
    """One connection to the collector, opened on first use and again after a failure.

    ``send`` raises ``OSError`` when the message did not go; the caller retries."""

    def __init__(
        self,
        address: SyslogAddress,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        if address.transport == "tls" and tls_context is None:
            raise ValueError("a tls:// syslog address needs a TLS context")
        self.address = address
        self.tls_context = tls_context
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        host, port = self.address.host, self.address.port
        if self.address.transport == "udp":
            family, kind, proto, _, target = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.timeout)
            sock.connect(target)  # connected: a refused port shows as an error on send
            return sock
        sock = socket.create_connection((host, port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.address.transport == "tls":
            assert self.tls_context is not None
            try:
                sock = self.tls_context.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        return sock

    def _peer_closed(self, sock: socket.socket) -> bool:
        """A collector never writes to us: a readable stream socket means it closed."""
        if self.address.transport == "udp":
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def send(self, message: bytes) -> None:
        if self._sock is not None and self._peer_closed(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._connect()
        try:
            if self.address.transport == "udp":
                self._sock.send(message)
            else:
                self._sock.sendall(b"%d " % len(message) + message)  # octet counting
        except OSError:
            self.close()
            raise

    def abort(self) -> None:
        """Unblock a send stuck on a collector that stopped reading (from another thread)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


@dataclass
class EmitterCounts:
    """What became of the messages handed to an emitter."""

    sent: int = 0
    dropped: int = 0  # queue full, or still queued when the emitter closed
    send_failures: int = 0  # failed tries (each retried)


_STOP = object()


class SyslogEmitter:
    """Queues audit messages and sends them from its own thread, in order."""

    def __init__(
        self,
        sender: SyslogSender,
        *,
        hostname: str,
        procid: str | None = None,
        queue_size: int = 1000,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.sender = sender
        self.hostname = hostname
        self.procid = procid if procid is not None else str(os.getpid())
        self.counts = EmitterCounts()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._backoff, self._backoff_max = backoff, backoff_max
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._thread.start()

    def emit(self, message: bytes, occurred_at: datetime, failure: bool = False) -> None:
        """Queue one audit message; never blocks, never raises."""
        framed = rfc5424(
            message,
            timestamp=occurred_at,
            hostname=self.hostname,
            procid=self.procid,
            severity=WARNING if failure else NOTICE,
        )
        try:
            if self._closing:
                raise queue.Full
            self._queue.put_nowait(framed)
        except queue.Full:
            with self._lock:
                self.counts.dropped += 1
                first = self.counts.dropped == 1
            if first or self.counts.dropped % 100 == 0:
                log.warning(
                    "audit syslog queue full or closed: %d messages dropped so far "
                    "(the database keeps every event)",
                    self.counts.dropped,
                )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, bytes)
            self._deliver(item)
            if self._stop.is_set():
                return

    def _deliver(self, message: bytes) -> None:
        wait = self._backoff
        while True:
            try:
                self.sender.send(message)
            except (OSError, ValueError) as error:
                with self._lock:
                    self.counts.send_failures += 1
                if isinstance(error, OSError) and error.errno == errno.EMSGSIZE:
                    log.error("audit message too large for one datagram, dropped: use tcp/tls")
                    with self._lock:
                        self.counts.dropped += 1
                    return
                log.warning(
                    "audit syslog %s://%s:%d: %s; retrying in %.1f s",
                    self.sender.address.transport,
                    self.sender.address.host,
                    self.sender.address.port,
                    error,
                    wait,
                )
                if self._stop.wait(wait):
                    with self._lock:
                        self.counts.dropped += 1
                    return
                wait = min(wait * 2, self._backoff_max)
            else:
                with self._lock:
                    self.counts.sent += 1
                return

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued within ``timeout``; drop (and count) the rest."""
        self._closing = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        self._stop.set()
        if self._thread.is_alive():
            self.sender.abort()
            self._thread.join(self.sender.timeout)
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            left += item is not _STOP
        with self._lock:
            self.counts.dropped += left
        self.sender.close()
