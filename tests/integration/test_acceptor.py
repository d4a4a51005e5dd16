"""The node's upper layer acceptor against a raw client: what a broken, hostile or silent
peer gets (an A-ABORT, a closed connection, nothing kept, its place given back), and
fragmentation down to the smallest PDU the node accepts.

The client speaks PS3.8 with pynetdicom's own PDU classes, byte for byte, so it can do
what no well-behaved SCU does: stop in the middle of a data set, send PDUs larger than
agreed, send data before asking, or say nothing at all.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pynetdicom import build_context
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from node.acceptor.pdu import COMMAND, LAST, PDU_HEADER, PDV_HEADER, AbortReason, PduType
from node.db.models import Instance
from node.scp import StorageSCP
from node.storage import INCOMING
from tests.node_process import wait_for
from tests.receive_node import pynetdicom_store, running_scp, spool_files
from tests.scu import closed_by_peer

CT = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StorageSCP]:
    with running_scp(tmp_path / "var", dicom_network_timeout=2.0) as node:
        yield node


def _associate_rq(calling: str = "RAWSCU", called: str = "AINODE") -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    context = build_context(CT_IMAGE_STORAGE, [EXPLICIT_LE])
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    primitive.user_information = [length]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return bytes(rq.encode())


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = _read_exactly(sock, PDU_HEADER.size)
    pdu_type, length = PDU_HEADER.unpack(head)
    return pdu_type, _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += part
    return data


def _p_data(control: int, data: bytes, context_id: int = 1) -> bytes:
    item = PDV_HEADER.pack(len(data) + 2, context_id, control) + data
    return PDU_HEADER.pack(PduType.P_DATA_TF, len(item)) + item


def _store_command(message_id: int = 1, instance_uid: str | None = None) -> bytes:
    """A C-STORE-RQ command set (Implicit VR Little Endian, group length first)."""
    command = Dataset()
    command.AffectedSOPClassUID = CT_IMAGE_STORAGE
    command.CommandField = 0x0001
    command.MessageID = message_id
    command.Priority = 0
    command.CommandDataSetType = 0x0000  # a data set follows
    command.AffectedSOPInstanceUID = (
        instance_uid or dcmread(CT, stop_before_pixels=True).SOPInstanceUID
    )
    body = encode(command, True, True)
    group = Dataset()
    group.CommandGroupLength = len(body)
    return encode(group, True, True) + body


@pytest.fixture
def associated(scp: StorageSCP) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", scp.settings.dicom_port), timeout=10)
    sock.sendall(_associate_rq())
    pdu_type, _ = _read_pdu(sock)
    assert pdu_type == PduType.A_ASSOCIATE_AC
    yield sock
    sock.close()


def _expect_abort(sock: socket.socket, reason: AbortReason | None = None) -> None:
    pdu_type, body = _read_pdu(sock)
    assert pdu_type == PduType.A_ABORT, f"PDU 0x{pdu_type:02X} where an A-ABORT was due"
    assert body[2] == 0x02  # from the service provider
    if reason is not None:
        assert body[3] == reason
    assert closed_by_peer(sock, 5)


def _nothing_kept(scp: StorageSCP) -> None:
    wait_for(lambda: not list((scp.settings.spool_dir / INCOMING).iterdir()), timeout=10,
             interval=0.05, what="the partial file removed")  # fmt: skip
    assert spool_files(scp) == []
    with scp.sessions() as session:
        assert session.query(Instance).count() == 0


def test_an_association_aborted_inside_a_data_set_keeps_nothing(
    scp: StorageSCP, associated: socket.socket
) -> None:
    data = CT.read_bytes()[132:]  # past preamble and prefix: meta and data set, enough bytes
    associated.sendall(_p_data(COMMAND | LAST, _store_command()))
    associated.sendall(_p_data(0, data[:4000]))  # a first fragment, not the last
    wait_for(lambda: any((scp.settings.spool_dir / INCOMING).iterdir()), timeout=10,
             interval=0.05, what="the data set being written")  # fmt: skip
    associated.sendall(PDU_HEADER.pack(PduType.A_ABORT, 4) + bytes([0, 0, 0, 0]))
    assert closed_by_peer(associated, 5)
    _nothing_kept(scp)
    wait_for(lambda: scp.admission.held() == 0, timeout=10, interval=0.05, what="release")
    assert pynetdicom_store(scp.settings.dicom_port, CT).Status == 0x0000  # still serving


def test_a_pdu_larger_than_agreed_is_aborted(scp: StorageSCP, associated: socket.socket) -> None:
    too_long = scp.settings.max_pdu_bytes + 1
    associated.sendall(PDU_HEADER.pack(PduType.P_DATA_TF, too_long))
    _expect_abort(associated, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    wait_for(lambda: scp.admission.held() == 0, timeout=10, interval=0.05, what="release")


def test_data_before_an_association_request_is_aborted(scp: StorageSCP) -> None:
    sock = socket.create_connection(("127.0.0.1", scp.settings.dicom_port), timeout=10)
    with sock:
        sock.sendall(_p_data(COMMAND | LAST, _store_command()))
        _expect_abort(sock, AbortReason.UNEXPECTED_PDU)
    _nothing_kept(scp)


def test_a_data_set_on_an_unaccepted_context_is_aborted(
    scp: StorageSCP, associated: socket.socket
) -> None:
    associated.sendall(_p_data(COMMAND | LAST, _store_command(), context_id=3))
    _expect_abort(associated, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    _nothing_kept(scp)


def test_an_unknown_pdu_type_is_aborted(scp: StorageSCP, associated: socket.socket) -> None:
    associated.sendall(PDU_HEADER.pack(0x09, 4) + bytes(4))
    _expect_abort(associated, AbortReason.UNEXPECTED_PDU)


def test_a_silent_association_is_aborted_after_the_network_timeout(
    scp: StorageSCP, associated: socket.socket
) -> None:
    assert scp.admission.held() == 1
    _expect_abort(associated)  # dicom_network_timeout is 2 s in this fixture
    wait_for(lambda: scp.admission.held() == 0, timeout=10, interval=0.05, what="release")


def test_smallest_pdus_carry_an_instance_whole(tmp_path: Path) -> None:
    """At the 4 KiB minimum, the command and the data set arrive in many fragments."""
    with running_scp(tmp_path / "var", max_pdu_bytes=4096) as node:
        assert pynetdicom_store(node.settings.dicom_port, CT).Status == 0x0000
        (kept,) = spool_files(node)
        assert dcmread(kept) == dcmread(CT)


def test_a_store_whose_uid_is_not_a_uid_is_answered_and_its_data_set_dropped(
    scp: StorageSCP, associated: socket.socket
) -> None:
    data = CT.read_bytes()[132:]
    associated.sendall(_p_data(COMMAND | LAST, _store_command(instance_uid="1.2.3.x/../y")))
    associated.sendall(_p_data(LAST, data[:8000]))
    pdu_type, body = _read_pdu(associated)
    assert pdu_type == PduType.P_DATA_TF
    answer = decode(BytesIO(body[6:]), True, True)  # past the PDV item's header
    assert answer.Status == 0xC000 and "UID" in answer.ErrorComment
    _nothing_kept(scp)
    associated.sendall(PDU_HEADER.pack(PduType.A_RELEASE_RQ, 4) + bytes(4))
    assert _read_pdu(associated)[0] == PduType.A_RELEASE_RP
