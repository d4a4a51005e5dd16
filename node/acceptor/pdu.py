"""PDU framing on a socket (PS3.8 9.3): read a PDU's header and items, write PDUs.

Reads go straight from the socket into the caller's buffer (``recv_into``); nothing
here holds more than one PDU's fixed parts. A peer that closes mid-PDU raises
:class:`PeerClosed`; a PDU that breaks the standard's framing raises
:class:`ProtocolError`, which the association answers with an A-ABORT.
"""

from __future__ import annotations

import enum
import socket
import struct
from collections.abc import Iterator

PDU_HEADER = struct.Struct(">BxI")  # type, reserved, length
PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, control header
COMMAND = 0x01  # message control header bit 0: a command set fragment (else a data set)
LAST = 0x02  # bit 1: the message's last fragment


class PduType(enum.IntEnum):
    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class AbortReason(enum.IntEnum):
    """A-ABORT reasons of the service provider (PS3.8 table 9-26)."""

    NOT_SPECIFIED = 0x00
    UNRECOGNIZED_PDU = 0x01
    UNEXPECTED_PDU = 0x02
    UNRECOGNIZED_PDU_PARAMETER = 0x04
    UNEXPECTED_PDU_PARAMETER = 0x05
    INVALID_PDU_PARAMETER_VALUE = 0x06


class PeerClosed(ConnectionError):
    """The peer closed the connection."""


class ProtocolError(ValueError):
    """A PDU that breaks PS3.8's framing; answered with an A-ABORT with ``reason``."""

    def __init__(self, message: str, reason: AbortReason) -> None:
        super().__init__(message)
        self.reason = reason


class PduReader:
    """Reads PDUs from one socket; ``buffer`` is reused for every read."""

    def __init__(self, sock: socket.socket, buffer_size: int) -> None:
        self.sock = sock
        self.buffer = bytearray(max(buffer_size, 64 * 1024))
        self.view = memoryview(self.buffer)

    def read_into(self, size: int) -> memoryview:
        """Exactly ``size`` bytes (at most the buffer's size), as a view of the buffer."""
        view = self.view[:size]
        got = 0
        while got < size:
            n = self.sock.recv_into(view[got:], size - got)
            if n == 0:
                raise PeerClosed("the peer closed the connection")
            got += n
        return view

    def read_bytes(self, size: int) -> bytes:
        return bytes(self.read_into(size)) if size <= len(self.buffer) else self._read_long(size)

    def _read_long(self, size: int) -> bytes:
        parts = []
        while size:
            part = min(size, len(self.buffer))
            parts.append(bytes(self.read_into(part)))
            size -= part
        return b"".join(parts)

    def chunks(self, size: int) -> Iterator[memoryview]:
        """``size`` bytes in buffer-sized views, each valid until the next is read."""
        while size:
            part = min(size, len(self.buffer))
            yield self.read_into(part)
            size -= part

    def header(self) -> tuple[int, int]:
        """The next PDU's (type, length)."""
        pdu_type, length = PDU_HEADER.unpack(self.read_into(PDU_HEADER.size))
        return pdu_type, length

    def pdv_header(self, remaining: int) -> tuple[int, int, int]:
        """The next PDV item of a P-DATA-TF with ``remaining`` bytes left:
        (data length, presentation context ID, message control header)."""
        if remaining < PDV_HEADER.size:
            raise ProtocolError("P-DATA-TF ends inside a PDV item header",
                                AbortReason.INVALID_PDU_PARAMETER_VALUE)  # fmt: skip
        length, context_id, control = PDV_HEADER.unpack(self.read_into(PDV_HEADER.size))
        if length < 2 or length - 2 > remaining - PDV_HEADER.size:
            raise ProtocolError(f"PDV item length {length} does not fit its P-DATA-TF",
                                AbortReason.INVALID_PDU_PARAMETER_VALUE)  # fmt: skip
        return length - 2, context_id, control


def encode_pdu(pdu_type: PduType, body: bytes) -> bytes:
    return PDU_HEADER.pack(pdu_type, len(body)) + body


def release_rp() -> bytes:
    return encode_pdu(PduType.A_RELEASE_RP, bytes(4))


def abort(reason: AbortReason = AbortReason.NOT_SPECIFIED) -> bytes:
    """An A-ABORT from the service provider (source 2) with ``reason``."""
    return encode_pdu(PduType.A_ABORT, bytes([0, 0, 0x02, reason]))


def reject(result: int, source: int, diagnostic: int) -> bytes:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4)."""
    return encode_pdu(PduType.A_ASSOCIATE_RJ, bytes([0, result, source, diagnostic]))


def p_data(context_id: int, command: bytes, max_pdu: int) -> Iterator[bytes]:
    """A command set as P-DATA-TF PDUs of at most ``max_pdu`` bytes (0: unlimited)."""
    room = (max_pdu or 1 << 32) - PDV_HEADER.size  # one PDV per PDU
    for start in range(0, len(command), room):
        fragment = command[start : start + room]
        control = COMMAND | (LAST if start + room >= len(command) else 0)
        item = PDV_HEADER.pack(len(fragment) + 2, context_id, control) + fragment
        yield encode_pdu(PduType.P_DATA_TF, item)
