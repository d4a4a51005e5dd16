"""What the node's DICOM associations share on the wire, inbound (the Storage SCP) and
outbound (delivery, storage commitment): the socket options every association gets."""

from __future__ import annotations

import socket

from pynetdicom.events import Event


def set_tcp_nodelay(event: Event) -> None:
    """Disable Nagle on every association socket, inbound and outbound.

    Without it each small PDU waits for the peer's delayed ACK (~40 ms), which caps a
    C-STORE stream at a few dozen instances per second. Bind it to ``evt.EVT_CONN_OPEN``.
    """
    sock = event.assoc.dul.socket
    raw = getattr(sock, "socket", None) if sock is not None else None
    if raw is not None:
        set_tcp_nodelay_on(raw)


def set_tcp_nodelay_on(sock: socket.socket) -> None:
    """Disable Nagle on one socket (the acceptor's, as it is accepted)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
