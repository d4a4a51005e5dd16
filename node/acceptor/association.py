"""One association as the acceptor, from its A-ASSOCIATE-RQ to its release or abort.

Runs in the connection's own thread and blocks on its socket: the association request
within the ACSE timeout, judged by :mod:`node.admission`; then either handed, with its
socket, to a receiving process (:mod:`node.acceptor.pool`), or accepted and served here
(:class:`~node.acceptor.messages.MessageStream`) until the peer releases, aborts, goes
silent for the network timeout or breaks the protocol (answered with an A-ABORT).
Either way the association ends in its :class:`~node.acceptor.record.AssociationRecord`,
handed to the ``on_ended`` callback, and its place with the admission given back.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

from node.acceptor.messages import AcceptorServices, MessageStream
from node.acceptor.negotiation import AssociationRequest, accept
from node.acceptor.pdu import (
    PDU_HEADER,
    AbortReason,
    PduReader,
    PduType,
    PeerClosed,
    ProtocolError,
    abort,
    reject,
)
from node.acceptor.record import AssociationRecord
from node.admission import Refusal

log = logging.getLogger(__name__)

MAX_ASSOCIATE_RQ = 1 << 20  # an A-ASSOCIATE-RQ proposing every storage class is ~30 KiB


class Association:
    """Serves one connection; ``run`` returns when it is over and the socket closed."""

    def __init__(self, sock: socket.socket, record: AssociationRecord,
                 services: AcceptorServices, over_ceiling: bool = False) -> None:  # fmt: skip
        self.sock = sock
        self.over_ceiling = over_ceiling  # too many connections: refuse whatever is asked
        self.record = record
        self.services = services
        self.reader = PduReader(sock, services.max_pdu or 1 << 20)
        self.stream: MessageStream | None = None  # once established
        self.admitted = False  # holds a place with the admission, to give back
        self.handed_off = False  # the socket belongs to a receiving process now

    def run(self) -> None:
        """Serve a new connection: its request, judged here, then the association."""
        self._guarded(self._from_connection)

    def run_admitted(self, request_pdu: bytes) -> None:
        """In a receiving process: serve an association whose request the node's own
        process already read and admitted (``request_pdu``, header included)."""
        self._guarded(lambda: self._establish(_decode(request_pdu)))

    def _guarded(self, body: Callable[[], None]) -> None:
        try:
            body()
        except TimeoutError:
            if self.stream is not None:
                self.record.outcome = "silent for the network timeout; aborted"
                self._send(abort())
            else:  # ARTIM expired before a request (PS3.8 AA-2): just close
                self.record.outcome = "no association request within the ACSE timeout"
        except ProtocolError as exc:
            self.record.outcome = f"aborted: {exc}"
            log.warning("aborting association from %s: %s", self.record.address, exc)
            self._send(abort(exc.reason))
        except (PeerClosed, OSError) as exc:
            if self.stream is not None:
                self.record.outcome = f"connection lost: {exc}"
        finally:
            if self.stream is not None:
                self.stream.discard()
            if self.admitted:
                self.services.admission.release(self.record.calling_ae_title)
            self._close()
            if self.services.on_ended is not None:
                self.services.on_ended(self.record)

    def _from_connection(self) -> None:
        self.sock.settimeout(self.services.acse_timeout)
        request_pdu = self._read_request()
        request = _decode(request_pdu)
        if not self._admit(request):
            return
        pool = self.services.pool
        if pool is not None and pool.takes(request, len(request_pdu)):
            self.handed_off = True
            pool.serve(self.sock, self.record, request_pdu)  # until it ends there
            return
        self._establish(request)

    def _read_request(self) -> bytes:
        pdu_type, length = self.reader.header()
        if pdu_type != PduType.A_ASSOCIATE_RQ:
            raise ProtocolError(f"PDU type 0x{pdu_type:02X} before an association request",
                                AbortReason.UNEXPECTED_PDU)  # fmt: skip
        if length > MAX_ASSOCIATE_RQ:
            raise ProtocolError(f"association request of {length} bytes",
                                AbortReason.INVALID_PDU_PARAMETER_VALUE)  # fmt: skip
        return PDU_HEADER.pack(pdu_type, length) + self.reader.read_bytes(length)

    def _admit(self, request: AssociationRequest) -> bool:
        record = self.record
        record.calling_ae_title = request.calling_ae_title
        record.called_ae_title = request.called_ae_title
        if self.over_ceiling:
            refusal: Refusal | None = Refusal.LOCAL_LIMIT_EXCEEDED
        else:
            refusal = self.services.admission.admit(
                request.calling_ae_title, request.called_ae_title, record.address
            )
        if refusal is not None:
            record.outcome = f"rejected: {refusal.name.lower().replace('_', ' ')}"
            self._send(reject(*refusal.value))
            return False
        self.admitted = True
        return True

    def _establish(self, request: AssociationRequest) -> None:
        """Accept ``request`` and serve the association until it ends."""
        self.record.calling_ae_title = request.calling_ae_title
        self.record.called_ae_title = request.called_ae_title
        services = self.services
        ac, contexts = accept(request, services.supported, services.max_pdu)
        self.sock.sendall(ac)
        self.record.outcome = "established"
        self.stream = MessageStream(self.sock, self.reader, self.record, services, contexts,
                                    request.peer_max_pdu)  # fmt: skip
        self.sock.settimeout(services.network_timeout)
        self.stream.serve()

    def _send(self, pdu: bytes) -> None:
        if self.handed_off:
            return
        with contextlib.suppress(OSError):  # the peer is gone: nothing more to tell it
            self.sock.sendall(pdu)

    def _close(self) -> None:
        # A handed-off socket is only this process's copy: shutting it down would end
        # the connection under the receiving process.
        if not self.handed_off:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _decode(request_pdu: bytes) -> AssociationRequest:
    try:
        return AssociationRequest.decode(request_pdu)
    except Exception as exc:  # noqa: BLE001 - any decoding error is the same abort
        raise ProtocolError(f"undecodable association request: {exc}",
                            AbortReason.INVALID_PDU_PARAMETER_VALUE) from exc  # fmt: skip
