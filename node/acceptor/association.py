"""One association as the acceptor, from its A-ASSOCIATE-RQ to its release or abort.

Runs in the connection's own thread and blocks on its socket: the association request
within the ACSE timeout, then PDUs until the peer releases, aborts, goes silent for the
network timeout or breaks the protocol (answered with an A-ABORT). Command fragments
gather in memory (bounded); a C-STORE's data set fragments go straight from the socket
into an incoming spool file as they arrive; a commitment report's data set, small by
nature, gathers in memory under its own bound. Each request is answered once its
handler has returned: for a C-STORE, once the instance is durable
(:func:`node.store.handle_store`).

Every association ends in an :class:`AssociationRecord` (who, from where, what was
stored, how it ended), handed to the ``on_ended`` callback: the audit trail's source.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO

from pydicom import Dataset
from pynetdicom.dsutils import decode
from pynetdicom.presentation import PresentationContext

from node.acceptor.dimse import Command, CommandField, response
from node.acceptor.negotiation import AcceptedContext, AssociationRequest, accept
from node.acceptor.pdu import (
    COMMAND,
    LAST,
    PDU_HEADER,
    PDV_HEADER,
    AbortReason,
    PduReader,
    PduType,
    PeerClosed,
    ProtocolError,
    abort,
    p_data,
    reject,
    release_rp,
)
from node.admission import Admission, Refusal
from node.delivery.commitment import ReportCallback, answer_report
from node.index import InstanceHeader
from node.status import StoreStatus
from node.storage import IncomingFile
from node.store import StorePath, StoreRequest, handle_store

log = logging.getLogger(__name__)

MAX_ASSOCIATE_RQ = 1 << 20  # an A-ASSOCIATE-RQ proposing every storage class is ~30 KiB
MAX_COMMAND = 64 * 1024  # a command set is a few hundred bytes
MAX_EVENT_INFORMATION = 16 << 20  # a commitment report of ~100,000 references


@dataclass
class StudyReceived:
    """The instances of one study kept on one association, by SOP Class UID."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_description: str
    sop_classes: Counter[str] = field(default_factory=Counter)


@dataclass
class AssociationRecord:
    """What happened on one association, for the log and the audit trail."""

    address: str
    port: int
    tls_identity: str | None = None
    calling_ae_title: str = ""
    called_ae_title: str = ""
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    refused: int = 0  # instances answered with a failure status
    studies: dict[str, StudyReceived] = field(default_factory=dict)  # by Study Instance UID
    outcome: str = "closed before an association request"

    @property
    def stored(self) -> int:
        """Instances answered Success."""
        return sum(sum(study.sop_classes.values()) for study in self.studies.values())

    def kept(self, header: InstanceHeader) -> None:
        study = self.studies.get(header.study_instance_uid)
        if study is None:
            study = self.studies[header.study_instance_uid] = StudyReceived(
                header.study_instance_uid,
                header.patient_id,
                header.patient_name,
                header.study_description,
            )
        study.sop_classes[header.sop_class_uid] += 1


@dataclass(frozen=True)
class AcceptorServices:
    """What every association of one listener shares."""

    admission: Admission
    supported: list[PresentationContext]
    max_pdu: int
    acse_timeout: float
    network_timeout: float
    store: StorePath
    on_report: ReportCallback | None = None
    on_ended: Callable[[AssociationRecord], None] | None = None


class _Message:
    """The request being received: its command once whole, then its data set."""

    def __init__(self) -> None:
        self.command_bytes = bytearray()
        self.command: Command | None = None
        self.context: AcceptedContext | None = None
        self.incoming: IncomingFile | None = None  # a C-STORE's data set
        self.data = bytearray()  # any other request's data set

    def discard(self) -> None:
        if self.incoming is not None:
            self.incoming.discard()


class Association:
    """Serves one connection; ``run`` returns when it is over and the socket closed."""

    def __init__(self, sock: socket.socket, record: AssociationRecord,
                 services: AcceptorServices, over_ceiling: bool = False) -> None:  # fmt: skip
        self.sock = sock
        self.over_ceiling = over_ceiling  # too many connections: refuse whatever is asked
        self.record = record
        self.services = services
        self.reader = PduReader(sock, services.max_pdu or 1 << 20)
        self.contexts: dict[int, AcceptedContext] = {}
        self.peer_max_pdu = 0

    def run(self) -> None:
        message = _Message()
        admitted = False
        try:
            admitted = self._associate()
            if admitted:
                self.sock.settimeout(self.services.network_timeout)
                message = self._serve(message)
        except TimeoutError:
            if admitted:
                self.record.outcome = "silent for the network timeout; aborted"
                self._send(abort())
            else:  # ARTIM expired before a request (PS3.8 AA-2): just close
                self.record.outcome = "no association request within the ACSE timeout"
        except ProtocolError as exc:
            self.record.outcome = f"aborted: {exc}"
            log.warning("aborting association from %s: %s", self.record.address, exc)
            self._send(abort(exc.reason))
        except (PeerClosed, OSError) as exc:
            if self.record.calling_ae_title and admitted:
                self.record.outcome = f"connection lost: {exc}"
        finally:
            message.discard()
            if admitted:
                self.services.admission.release(self.record.calling_ae_title)
            self._close()
            if self.services.on_ended is not None:
                self.services.on_ended(self.record)

    def _associate(self) -> bool:
        """Read and answer the association request; whether it was accepted."""
        self.sock.settimeout(self.services.acse_timeout)
        pdu_type, length = self.reader.header()
        if pdu_type != PduType.A_ASSOCIATE_RQ:
            raise ProtocolError(f"PDU type 0x{pdu_type:02X} before an association request",
                                AbortReason.UNEXPECTED_PDU)  # fmt: skip
        if length > MAX_ASSOCIATE_RQ:
            raise ProtocolError(f"association request of {length} bytes",
                                AbortReason.INVALID_PDU_PARAMETER_VALUE)  # fmt: skip
        body = self.reader.read_bytes(length)
        try:
            request = AssociationRequest.decode(PDU_HEADER.pack(pdu_type, length) + body)
        except Exception as exc:  # noqa: BLE001 - any decoding error is the same abort
            raise ProtocolError(f"undecodable association request: {exc}",
                                AbortReason.INVALID_PDU_PARAMETER_VALUE) from exc  # fmt: skip
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
        ac, self.contexts = accept(request, self.services.supported, self.services.max_pdu)
        self.peer_max_pdu = request.peer_max_pdu
        self.sock.sendall(ac)
        record.outcome = "established"
        return True

    def _serve(self, message: _Message) -> _Message:
        while True:
            pdu_type, length = self.reader.header()
            if pdu_type == PduType.P_DATA_TF:
                if self.services.max_pdu and length > self.services.max_pdu:
                    raise ProtocolError(
                        f"P-DATA-TF of {length} bytes, over the {self.services.max_pdu} agreed",
                        AbortReason.INVALID_PDU_PARAMETER_VALUE,
                    )
                message = self._p_data(message, length)
            elif pdu_type == PduType.A_RELEASE_RQ:
                self.reader.read_bytes(length)
                self.sock.sendall(release_rp())
                self.record.outcome = "released"
                return message
            elif pdu_type == PduType.A_ABORT:
                self.reader.read_bytes(min(length, 64))
                self.record.outcome = "aborted by the peer"
                return message
            else:
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}",
                                    AbortReason.UNEXPECTED_PDU)  # fmt: skip

    def _p_data(self, message: _Message, remaining: int) -> _Message:
        while remaining:
            size, context_id, control = self.reader.pdv_header(remaining)
            remaining -= PDV_HEADER.size + size
            context = self.contexts.get(context_id)
            if context is None:
                raise ProtocolError(f"PDV on presentation context {context_id}, not accepted",
                                    AbortReason.INVALID_PDU_PARAMETER_VALUE)  # fmt: skip
            if control & COMMAND:
                self._command_fragment(message, context, size, last=bool(control & LAST))
                if message.command is not None and not message.command.has_data_set:
                    self._answer(message)
                    message = _Message()
            else:
                self._data_fragment(message, context, size)
                if control & LAST:
                    self._answer(message)
                    message = _Message()
        return message

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
            message.incoming = self.services.store.incoming.open(
                command.sop_class_uid, command.sop_instance_uid, context.transfer_syntax
            )

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

    def _send(self, pdu: bytes) -> None:
        with contextlib.suppress(OSError):  # the peer is gone: nothing more to tell it
            self.sock.sendall(pdu)

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _data_set(data: bytearray, transfer_syntax: str) -> Dataset:
    implicit = transfer_syntax == "1.2.840.10008.1.2"
    big = transfer_syntax == "1.2.840.10008.1.2.2"
    ds = decode(BytesIO(bytes(data)), implicit, not big)
    if ds is None:
        raise ValueError("empty data set")
    return ds
