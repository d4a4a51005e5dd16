"""An established association's PDUs, read and answered until it is released or aborted.

Command fragments gather in memory (bounded); a C-STORE's data set fragments go
straight from the socket into an incoming spool file as they arrive; a commitment
report's data set, small by nature, gathers in memory under its own bound. Each request
is answered once its handler has returned: for a C-STORE, once the instance is durable
(:func:`node.store.handle_store`). Anything that breaks PS3.8 raises
:class:`~node.acceptor.pdu.ProtocolError`, which the association answers with an
A-ABORT.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING

from pydicom import Dataset
from pynetdicom.dsutils import decode
from pynetdicom.presentation import PresentationContext

from node.acceptor.dimse import Command, CommandField, response
from node.acceptor.negotiation import AcceptedContext
from node.acceptor.pdu import (
    COMMAND,
    LAST,
    PDV_HEADER,
    AbortReason,
    PduReader,
    PduType,
    ProtocolError,
    p_data,
    release_rp,
)
from node.acceptor.record import AssociationRecord
from node.delivery.commitment import ReportCallback, answer_report
from node.status import StoreStatus
from node.storage import IncomingFile
from node.store import StorePath, StoreRequest, failure, handle_store
from node.uids import InvalidUID

if TYPE_CHECKING:
    from node.acceptor.pool import ReceiverPool
    from node.admission import Admission

MAX_COMMAND = 64 * 1024  # a command set is a few hundred bytes
MAX_EVENT_INFORMATION = 16 << 20  # a commitment report of ~100,000 references


@dataclass(frozen=True)
class AcceptorServices:
    """What every association of one listener (or of one receiving process) shares."""

    admission: Admission
    supported: list[PresentationContext]
    max_pdu: int
    acse_timeout: float
    network_timeout: float
    store: StorePath
    on_report: ReportCallback | None = None
    on_ended: Callable[[AssociationRecord], None] | None = None
    pool: ReceiverPool | None = None  # receiving processes to hand associations to


class _Message:
    """The request being received: its command once whole, then its data set."""

    def __init__(self) -> None:
        self.command_bytes = bytearray()
        self.command: Command | None = None
        self.context: AcceptedContext | None = None
        self.incoming: IncomingFile | None = None  # a C-STORE's data set
        self.refusal: str | None = None  # a C-STORE refused before its data set: dropped
        self.data = bytearray()  # any other request's data set

    def discard(self) -> None:
        if self.incoming is not None:
            self.incoming.discard()
            self.incoming = None


class MessageStream:
    """Reads one established association's PDUs and answers its requests."""

    def __init__(self, sock: socket.socket, reader: PduReader, record: AssociationRecord,
                 services: AcceptorServices, contexts: dict[int, AcceptedContext],
                 peer_max_pdu: int) -> None:  # fmt: skip
        self.sock = sock
        self.reader = reader
        self.record = record
        self.services = services
        self.contexts = contexts
        self.peer_max_pdu = peer_max_pdu
        self.message = _Message()

    def discard(self) -> None:
        """Remove what a request cut short left (a partial incoming file)."""
        self.message.discard()

    def serve(self) -> None:
        """Until the peer releases (answered) or aborts."""
        while True:
            pdu_type, length = self.reader.header()
            if pdu_type == PduType.P_DATA_TF:
                if self.services.max_pdu and length > self.services.max_pdu:
                    raise ProtocolError(
                        f"P-DATA-TF of {length} bytes, over the {self.services.max_pdu} agreed",
                        AbortReason.INVALID_PDU_PARAMETER_VALUE,
                    )
                self._p_data(length)
            elif pdu_type == PduType.A_RELEASE_RQ:
                self.reader.read_bytes(length)
                self.sock.sendall(release_rp())
                self.record.outcome = "released"
                return
            elif pdu_type == PduType.A_ABORT:
                self.reader.read_bytes(min(length, 64))
                self.record.outcome = "aborted by the peer"
                return
            else:
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}",
                                    AbortReason.UNEXPECTED_PDU)  # fmt: skip

    def _p_data(self, remaining: int) -> None:
        while remaining:
            size, context_id, control = self.reader.pdv_header(remaining)
            remaining -= PDV_HEADER.size + size
            context = self.contexts.get(context_id)
            if context is None:
                raise ProtocolError(f"PDV on presentation context {context_id}, not accepted",
                                    AbortReason.INVALID_PDU_PARAMETER_VALUE)  # fmt: skip
            message = self.message
            if control & COMMAND:
                self._command_fragment(message, context, size, last=bool(control & LAST))
                done = message.command is not None and not message.command.has_data_set
            else:
                self._data_fragment(message, context, size)
                done = bool(control & LAST)
            if done:
                self.message = _Message()
                self._answer(message)

    def _command_fragment(self, message: _Message, context: AcceptedContext, size: int,
                          last: bool) -> None:  # fmt: skip
        if message.command is not None:
            raise ProtocolError("a command fragment where a data set was expected",
                                AbortReason.UNEXPECTED_PDU_PARAMETER)  # fmt: skip
        if len(message.command_bytes) + size > MAX_COMMAND:
            raise ProtocolError("command set over 64 KiB", AbortReason.INVALID_PDU_PARAMETER_VALUE)
        for chunk in self.reader.chunks(size):
            message.command_bytes += chunk
        if not last:
            return
        try:
            command = Command.decode(bytes(message.command_bytes))
            CommandField(command.field)
        except ValueError as exc:
            raise ProtocolError(f"unreadable or unsupported command: {exc}",
                                AbortReason.INVALID_PDU_PARAMETER_VALUE) from exc  # fmt: skip
        message.command, message.context = command, context
        if command.field == CommandField.C_STORE_RQ and command.has_data_set:
            try:
                message.incoming = self.services.store.incoming.open(
                    command.sop_class_uid, command.sop_instance_uid, context.transfer_syntax
                )
            except InvalidUID as exc:
                message.refusal = str(exc)

    def _data_fragment(self, message: _Message, context: AcceptedContext, size: int) -> None:
        if message.command is None or not message.command.has_data_set:
            raise ProtocolError("a data set fragment without its command",
                                AbortReason.UNEXPECTED_PDU_PARAMETER)  # fmt: skip
        if context is not message.context:
            raise ProtocolError("a data set on another presentation context than its command",
                                AbortReason.INVALID_PDU_PARAMETER_VALUE)  # fmt: skip
        if message.incoming is not None:
            for chunk in self.reader.chunks(size):
                message.incoming.write(chunk)
            return
        if message.refusal is not None:
            for _chunk in self.reader.chunks(size):
                pass  # read off the wire and dropped: the answer is already decided
            return
        if len(message.data) + size > MAX_EVENT_INFORMATION:
            raise ProtocolError("data set over 16 MiB", AbortReason.INVALID_PDU_PARAMETER_VALUE)
        for chunk in self.reader.chunks(size):
            message.data += chunk

    def _answer(self, message: _Message) -> None:
        command, context = message.command, message.context
        assert command is not None and context is not None
        status: int | Dataset
        if command.field == CommandField.C_STORE_RQ:
            status = self._store(message)
        elif command.field == CommandField.C_ECHO_RQ:
            status = int(StoreStatus.SUCCESS)
        elif command.field == CommandField.N_EVENT_REPORT_RQ and self.services.on_report:
            status = answer_report(
                self.services.on_report,
                self.record.calling_ae_title,
                command.sop_class_uid,
                command.event_type_id,
                lambda: _data_set(message.data, context.transfer_syntax),
            )
        else:
            raise ProtocolError(f"command 0x{command.field:04X} is not served here",
                                AbortReason.UNEXPECTED_PDU_PARAMETER)  # fmt: skip
        for pdu in p_data(context.context_id, response(command, status), self.peer_max_pdu):
            self.sock.sendall(pdu)

    def _store(self, message: _Message) -> int | Dataset:
        command, context, incoming = message.command, message.context, message.incoming
        if message.refusal is not None:
            self.record.refused += 1
            return failure(StoreStatus.CANNOT_UNDERSTAND, message.refusal)
        assert command is not None and context is not None and incoming is not None
        message.incoming = None  # handle_store owns it now
        request = StoreRequest(
            self.record.calling_ae_title,
            context.transfer_syntax,
            command.sop_instance_uid,
            incoming,
        )
        verdict = handle_store(self.services.store, request)
        if verdict.header is not None:
            self.record.kept(verdict.header)
        else:
            self.record.refused += 1
        return verdict.status


def _data_set(data: bytearray, transfer_syntax: str) -> Dataset:
    implicit = transfer_syntax == "1.2.840.10008.1.2"
    big = transfer_syntax == "1.2.840.10008.1.2.2"
    ds = decode(BytesIO(bytes(data)), implicit, not big)
    if ds is None:
        raise ValueError("empty data set")
    return ds
