"""Hostile bytes against the Storage SCP, seeded so a failure can be replayed: mutated
protocol streams and mutated data sets. Whatever arrives, the node answers or closes,
keeps serving, gives every association's place back, leaves no partial file, and keeps
only what it could read, each file described by its row."""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from node.acceptor.pdu import COMMAND, LAST
from node.db.models import Instance
from node.scp import StorageSCP
from node.storage import INCOMING
from tests.integration.test_acceptor import _associate_rq, _p_data, _store_command
from tests.node_process import wait_for
from tests.receive_node import pynetdicom_store, running_scp
from tests.scu import send_raw

CT = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
SEED = 20261202
CASES = 150


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StorageSCP]:
    with running_scp(tmp_path / "var", dicom_network_timeout=2.0,
                     dicom_acse_timeout=2.0) as node:  # fmt: skip
        yield node


def _mutate(stream: bytes, rng: random.Random) -> bytes:
    data = bytearray(stream)
    action = rng.choice(["flip", "truncate", "splice", "length"])
    if action == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif action == "truncate":
        del data[rng.randrange(1, len(data)) :]
    elif action == "splice":
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 64))
    else:  # a PDU or item length field made large or small
        at = rng.randrange(max(1, len(data) - 4))
        data[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                        b"\x7f\xff\xff\xf0", b"\x00\x00\x00\x01"])  # fmt: skip
    return bytes(data)


def _exchange(port: int, stream: bytes) -> None:
    """Send ``stream``, stop sending, read until the node closes (or 10 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(stream)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # reset by the node: an answer too


def test_mutated_protocol_streams_never_take_the_node_down(scp: StorageSCP) -> None:
    rng = random.Random(SEED)
    data = CT.read_bytes()[132:]
    valid = (
        _associate_rq()
        + _p_data(COMMAND | LAST, _store_command())
        + _p_data(0, data[:6000])
        + _p_data(LAST, data[6000:12000])
    )
    port = scp.settings.dicom_port
    for _ in range(CASES):
        _exchange(port, _mutate(valid, rng))
    assert scp.listening
    wait_for(lambda: scp.admission.held() == 0, timeout=20, interval=0.1, what="every place back")
    wait_for(lambda: not list((scp.settings.spool_dir / INCOMING).iterdir()), timeout=20,
             interval=0.1, what="no partial file left")  # fmt: skip
    assert pynetdicom_store(port, CT).Status == 0x0000  # and it still receives


def test_mutated_data_sets_get_an_answer_and_only_readable_ones_are_kept(
    scp: StorageSCP, tmp_path: Path
) -> None:
    rng = random.Random(SEED + 1)
    original = CT.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(original[140:144], "little")  # past the file meta
    statuses: list[int] = []
    for case in range(60):
        data = bytearray(original)
        for _ in range(rng.randint(1, 12)):  # damage the data set's header region
            data[rng.randrange(meta_end, meta_end + 900)] = rng.randrange(256)
        path = tmp_path / f"mutated{case}.dcm"
        path.write_bytes(bytes(data))
        statuses.append(int(send_raw("127.0.0.1", scp.settings.dicom_port, "AINODE", path).Status))
    print(f"{len(statuses)} mutated data sets: {statuses.count(0)} kept, "
          f"{len(statuses) - statuses.count(0)} refused")  # fmt: skip
    assert scp.listening and any(status != 0 for status in statuses)
    with scp.sessions() as session:
        rows = list(session.scalars(select(Instance)))
    for row in rows:  # each kept instance: its file, whole, as its row describes it
        kept = scp.settings.spool_dir / row.path
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == row.digest
    wait_for(lambda: not list((scp.settings.spool_dir / INCOMING).iterdir()), timeout=20,
             interval=0.1, what="no partial file left")  # fmt: skip
