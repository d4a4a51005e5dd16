"""Crash safety of the receive path: SIGKILL while storescu sends, a database that
goes away, and the start-up sweep of what either leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg2
from pydicom.filereader import read_file_meta_info
from sqlalchemy import create_engine, select

from node.db.models import Instance
from node.status import StoreStatus
from tests.conftest import POSTGRES_ADMIN
from tests.node_process import wait_for
from tests.orthanc import free_port
from tests.receive_files import header, write_instance
from tests.receive_node import pynetdicom_store, running_scp, spool_files

# Only the Storage SCP, as `ainode serve` starts it: migrate, sweep, listen.
SCP_ONLY = """
import threading
from node.db.migrate import upgrade_to_head
from node.db.session import make_engine, make_session_factory
from node.scp import StorageSCP
from node.settings import Settings
from node.store import sweep_at_start
settings = Settings.load()
engine = make_engine(settings)
upgrade_to_head(engine)
sessions = make_session_factory(engine)
sweep_at_start(settings, sessions)
StorageSCP(settings, sessions).start()
threading.Event().wait()
"""


def start_scp(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINODE_")}
    env.update(AINODE_DATA_DIR=str(data_dir), AINODE_DICOM_PORT=str(port),
               AINODE_DICOM_BIND="127.0.0.1")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", SCP_ONLY], env=env, cwd=Path.cwd(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def answers() -> bool:
        assert process.poll() is None, "the SCP process exited"
        echo = subprocess.run(["echoscu", "-aec", "AINODE", "127.0.0.1", str(port)],
                              capture_output=True)  # fmt: skip
        return echo.returncode == 0

    wait_for(answers, 60, 0.1, "the SCP to answer C-ECHO")
    return process


def acknowledged(log: str) -> list[Path]:
    """The files storescu -v reports a Success response for."""
    done, current = [], None
    for line in log.splitlines():
        if "Sending file: " in line:
            current = Path(line.split("Sending file: ", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            done.append(current)
    return done


def stored_a_few(log_path: Path, sender: subprocess.Popen[bytes]):  # noqa: ANN201
    """A condition: storescu saw a few acknowledgements, or finished."""
    return lambda: len(acknowledged(log_path.read_text())) >= 3 or sender.poll() is not None


def data_set_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[144 + int(read_file_meta_info(path).FileMetaInformationGroupLength) :]


def test_sigkill_while_receiving_loses_nothing_acknowledged(tmp_path: Path) -> None:
    sources = tmp_path / "sent"
    sources.mkdir()
    files = [sources / f"{i}.dcm" for i in range(400)]
    for i, path in enumerate(files):
        write_instance(path, header(f"1.2.826.0.1.3680043.8.498.9.{i}", InstanceNumber=i), 64 << 10)
    data, port = tmp_path / "var", free_port()
    acked: set[Path] = set()
    for round_ in range(20):
        scp = start_scp(data, port)
        batch = files[(round_ * 20) % 400 :] + files[: (round_ * 20) % 400]
        log_path = tmp_path / f"storescu{round_}.log"
        with log_path.open("w") as log:
            sender = subprocess.Popen(
                ["storescu", "-v", "-xe", "-aec", "AINODE", "127.0.0.1", str(port),
                 *map(str, batch)], stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            wait_for(stored_a_few(log_path, sender), 30, 0.02, "storescu to store a few")
            os.kill(scp.pid, signal.SIGKILL)
            scp.wait()
            sender.wait(timeout=60)
        acked.update(acknowledged(log_path.read_text()))
    scp = start_scp(data, port)  # the final start sweeps
    try:
        engine = create_engine(f"sqlite:///{data / 'ainode.db'}")
        with engine.connect() as conn:
            rows = {r.sop_instance_uid: r.path for r in conn.execute(select(Instance))}
        engine.dispose()
        spool = data / "spool"
        on_disk = {p.relative_to(spool).as_posix() for p in spool.rglob("*") if p.is_file()}
        assert on_disk == set(rows.values()), "unindexed or temporary files left"
        assert len(acked) >= 20
        for path in acked:
            uid = f"1.2.826.0.1.3680043.8.498.9.{path.stem}"
            assert uid in rows, f"{path.name} was acknowledged but is not indexed"
            assert data_set_bytes(spool / rows[uid]) == data_set_bytes(path)
    finally:
        scp.kill()
        scp.wait()


def test_a_database_down_refuses_the_store_and_keeps_no_file(tmp_path: Path) -> None:
    name = f"ainode_dbdown_{os.getpid()}_{free_port()}"
    admin = psycopg2.connect(POSTGRES_ADMIN, connect_timeout=5)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_instance(first, header(), 4096)
    write_instance(second, header(), 4096)
    try:
        with running_scp(tmp_path / "var", database_url=url) as scp:
            assert pynetdicom_store(scp.settings.dicom_port, first).Status == 0
            kept = spool_files(scp)
            with admin.cursor() as cur:  # the database goes away under the running node
                cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            status = pynetdicom_store(scp.settings.dicom_port, second)
            assert status.Status == StoreStatus.OUT_OF_RESOURCES
            assert "cannot index" in str(status.ErrorComment)
            assert spool_files(scp) == kept
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_the_sweep_removes_temporary_and_unindexed_files(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with running_scp(data) as scp:
        good = tmp_path / "a.dcm"
        write_instance(good, header(), 4096)
        assert pynetdicom_store(scp.settings.dicom_port, good).Status == 0
        kept = spool_files(scp)
    spool = data / "spool"
    (spool / ".incoming" / "tmpabc.dcm").write_bytes(b"partial")
    (spool / "1.2" / "3.4").mkdir(parents=True)
    (spool / "1.2" / "3.4" / "5.6.dcm").write_bytes(b"never indexed")
    (spool / "1.2" / "3.4" / ".5.7.dcm.1.2.tmp").write_bytes(b"torn")
    scp = start_scp(data, free_port())
    scp.kill()
    scp.wait()
    assert sorted(p for p in spool.rglob("*") if p.is_file()) == kept
