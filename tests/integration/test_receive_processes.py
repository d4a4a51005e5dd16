"""Receiving processes (AINODE_DICOM_RECEIVE_PROCESSES): associations served by other
processes than the node's own, with admission, records and crash safety unchanged."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import select

from node.acceptor.pdu import PduType
from node.acceptor.record import AssociationRecord
from node.db.models import Instance
from node.scp import StorageSCP
from tests.integration.test_acceptor import _associate_rq, _read_pdu
from tests.integration.test_receive_crash import acknowledged, data_set_bytes, stored_a_few
from tests.node_process import wait_for
from tests.receive_files import header, write_instance
from tests.receive_node import CALLED, pynetdicom_store, running_scp, spool_files

CT = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]


def _series(folder: Path, count: int, prefix: str) -> list[Path]:
    folder.mkdir()
    files = [folder / f"{i}.dcm" for i in range(count)]
    for i, path in enumerate(files):
        write_instance(path, header(f"{prefix}.{i}", InstanceNumber=i), 32 << 10)
    return files


def _senders(port: int, shares: list[list[Path]], log_dir: Path) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [
                "storescu",
                "-v",
                "-xe",
                "-aet",
                f"CT{n}",
                "-aec",
                CALLED,
                "127.0.0.1",
                str(port),
                *map(str, share),
            ],
            stdout=(log_dir / f"storescu{n}.log").open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )  # fmt: skip
        for n, share in enumerate(shares)
    ]


def _indexed(scp: StorageSCP) -> dict[str, str]:
    with scp.sessions() as session:
        return {i.sop_instance_uid: i.path for i in session.scalars(select(Instance))}


def test_associations_are_served_by_the_receiving_processes(tmp_path: Path) -> None:
    files = _series(tmp_path / "sent", 120, "1.2.826.0.1.3680043.8.498.71")
    with running_scp(tmp_path / "var", dicom_receive_processes=2) as scp:
        assert scp.pool is not None and len(set(scp.pool.pids())) == 2
        assert os.getpid() not in scp.pool.pids()
        senders = _senders(scp.settings.dicom_port, [files[i::4] for i in range(4)], tmp_path)
        assert all(sender.wait(timeout=120) == 0 for sender in senders)
        assert len(_indexed(scp)) == 120
        assert len(spool_files(scp)) == 120
        wait_for(lambda: scp.admission.held() == 0, timeout=10, interval=0.05, what="release")
        # Each process has its own committer: the node's own never saw these instances.
        assert scp.store.committer.largest_round == 0


def test_the_node_process_records_what_the_receiving_process_kept(tmp_path: Path) -> None:
    records: list[AssociationRecord] = []
    with running_scp(
        tmp_path / "var", dicom_receive_processes=1, on_association=records.append
    ) as scp:
        assert pynetdicom_store(scp.settings.dicom_port, CT).Status == 0x0000
        wait_for(lambda: bool(records), timeout=10, interval=0.05, what="the record")
    (record,) = records
    ds = dcmread(CT, stop_before_pixels=True)
    assert record.calling_ae_title == "SECONDSCU" and record.outcome == "released"
    assert record.stored == 1 and record.refused == 0
    study = record.studies[str(ds.StudyInstanceUID)]
    assert study.patient_id == str(ds.PatientID)
    assert study.sop_classes == {str(ds.SOPClassUID): 1}


def test_admission_counts_every_process(tmp_path: Path) -> None:
    """Two associations from one AE title at once, one allowed: the second is refused
    although another process had room for it."""
    with running_scp(tmp_path / "var", dicom_receive_processes=2,
                     dicom_max_associations_per_aet=1) as scp:  # fmt: skip
        port = scp.settings.dicom_port
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        first.sendall(_associate_rq(calling="CT1", called=CALLED))
        assert _read_pdu(first)[0] == PduType.A_ASSOCIATE_AC
        second = socket.create_connection(("127.0.0.1", port), timeout=10)
        second.sendall(_associate_rq(calling="CT1", called=CALLED))
        pdu_type, body = _read_pdu(second)
        assert pdu_type == PduType.A_ASSOCIATE_RJ and body[1:4] == bytes([0x02, 0x03, 0x02])
        first.close()
        second.close()
        wait_for(lambda: scp.admission.held() == 0, timeout=10, interval=0.05, what="release")


def test_a_killed_receiving_process_loses_nothing_acknowledged(tmp_path: Path) -> None:
    files = _series(tmp_path / "sent", 200, "1.2.826.0.1.3680043.8.498.72")
    with running_scp(tmp_path / "var", dicom_receive_processes=1) as scp:
        assert scp.pool is not None
        (victim,) = scp.pool.pids()
        (sender,) = _senders(scp.settings.dicom_port, [files], tmp_path)
        log_path = tmp_path / "storescu0.log"
        wait_for(stored_a_few(log_path, sender), 30, 0.02, "storescu to store a few")
        os.kill(victim, signal.SIGKILL)
        sender.wait(timeout=60)
        acked = acknowledged(log_path.read_text())
        assert acked and len(acked) < len(files), "the kill came too late to mean anything"
        # The process is started again, and the place the association held is given back.
        wait_for(lambda: scp.pool is not None and scp.pool.pids() != [victim], timeout=60,
                 interval=0.1, what="the receiving process to start again")  # fmt: skip
        wait_for(lambda: scp.admission.held() == 0, timeout=10, interval=0.05, what="release")
        rows = _indexed(scp)
        for path in acked:
            uid = f"1.2.826.0.1.3680043.8.498.72.{path.stem}"
            assert uid in rows, f"{path.name} was acknowledged but is not indexed"
            kept = scp.settings.spool_dir / rows[uid]
            assert data_set_bytes(kept) == data_set_bytes(path)
        # The sender tries again: everything arrives, through the new process.
        (again,) = _senders(scp.settings.dicom_port, [files], tmp_path)
        assert again.wait(timeout=120) == 0
        assert len(_indexed(scp)) == len(files)
