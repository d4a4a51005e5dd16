"""Who may associate with the Storage SCP and how many at once, with DCMTK's echoscu and
storescu as the real senders and pynetdicom as a second client holding associations."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from node.db.migrate import upgrade_to_head
from node.db.session import make_engine, make_session_factory
from node.scp import StorageSCP
from node.settings import Settings
from tests.node_process import wait_for
from tests.orthanc import free_port
from tests.scu import closed_by_peer

CT = str(get_testdata_file("CT_small.dcm", download=False))

ScpFactory = Callable[..., StorageSCP]


@pytest.fixture
def make_scp(tmp_path: Path) -> Iterator[ScpFactory]:
    """Start a Storage SCP with the given settings (plain TCP on a free port)."""
    started: list[tuple[StorageSCP, object]] = []

    def make(**settings: object) -> StorageSCP:
        values: dict[str, object] = {
            "data_dir": tmp_path / f"var{len(started)}",
            "dicom_bind": "127.0.0.1",
            "dicom_port": free_port(),
            **settings,
        }
        config = Settings(**values)  # type: ignore[arg-type]
        engine = make_engine(config)
        upgrade_to_head(engine)
        node = StorageSCP(config, make_session_factory(engine))
        node.start()
        started.append((node, engine))
        return node

    yield make
    for node, engine in started:
        node.stop()
        engine.dispose()  # type: ignore[attr-defined]


def echo(scp: StorageSCP, calling: str = "ECHOSCU", called: str = "AINODE"):  # noqa: ANN201
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", called, "-ta", "10",
         "127.0.0.1", str(scp.settings.dicom_port)],
        env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str], reason: str) -> bool:
    """echoscu failed with an A-ASSOCIATE-RJ naming ``reason``."""
    output = result.stdout + result.stderr
    return result.returncode != 0 and "Association Rejected" in output and reason in output


@contextmanager
def held(scp: StorageSCP, calling: str) -> Iterator[Association]:
    """A pynetdicom association kept open as ``calling``."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.settings.dicom_port, ae_title="AINODE")
    assert assoc.is_established, f"{calling} could not associate"
    try:
        yield assoc
    finally:
        assoc.release()


def test_called_ae_title_is_checked(make_scp: ScpFactory) -> None:
    scp = make_scp()
    wrong = echo(scp, called="WRONG")
    assert refused(wrong, "Called AE Title Not Recognized"), wrong.stdout + wrong.stderr
    assert echo(scp).returncode == 0


def test_allow_list_of_ae_titles_and_hosts(make_scp: ScpFactory) -> None:
    scp = make_scp(allowed_calling_aets="CT1@127.0.0.1, PACS@10.1.0.0/16, OLDSTYLE")
    assert echo(scp, "CT1").returncode == 0  # title and host match
    assert echo(scp, "OLDSTYLE").returncode == 0  # a bare title: from anywhere
    other_host = echo(scp, "PACS")  # on the list, but only from 10.1.0.0/16
    assert refused(other_host, "Calling AE Title Not Recognized"), other_host.stdout
    stranger = echo(scp, "STRANGER")
    assert refused(stranger, "Calling AE Title Not Recognized"), stranger.stdout
    blocked = subprocess.run(
        ["storescu", "-aet", "STRANGER", "-aec", "AINODE", "127.0.0.1",
         str(scp.settings.dicom_port), CT], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert blocked.returncode != 0
    assert not list(scp.settings.spool_dir.rglob("*.dcm"))


def test_any_title_from_one_host(make_scp: ScpFactory) -> None:
    local = make_scp(allowed_calling_aets="*@127.0.0.0/8")
    assert echo(local, "ANYONE").returncode == 0
    remote = make_scp(allowed_calling_aets="*@10.0.0.5")
    assert refused(echo(remote, "ANYONE"), "Calling AE Title Not Recognized")


def test_limit_per_calling_ae_title(make_scp: ScpFactory) -> None:
    scp = make_scp(dicom_max_associations_per_aet=1)
    with held(scp, "CT1"):
        second = echo(scp, "CT1")
        assert refused(second, "Local Limit Exceeded"), second.stdout + second.stderr
        assert "Transient" in second.stdout + second.stderr
        assert echo(scp, "CT2").returncode == 0  # another sender is not held up
    wait_for(lambda: scp.admission.held() == 0, timeout=10, interval=0.05, what="release")
    assert echo(scp, "CT1").returncode == 0


def test_limit_in_total(make_scp: ScpFactory) -> None:
    scp = make_scp(dicom_max_associations=2)
    with held(scp, "CT1"), held(scp, "CT2"):
        third = echo(scp, "CT3")
        assert refused(third, "Local Limit Exceeded"), third.stdout + third.stderr
    wait_for(lambda: scp.admission.held() == 0, timeout=10, interval=0.05, what="release")
    assert echo(scp, "CT3").returncode == 0


def test_silent_connections_do_not_keep_a_sender_out(make_scp: ScpFactory) -> None:
    timeout = 2.0
    # Two places only: if silent connections took places, the sender would be refused.
    scp = make_scp(dicom_acse_timeout=timeout, dicom_max_associations=2)
    idle = [socket.create_connection(("127.0.0.1", scp.settings.dicom_port)) for _ in range(20)]
    started = time.monotonic()
    result = subprocess.run(
        ["storescu", "-aet", "CT1", "-aec", "AINODE", "127.0.0.1",
         str(scp.settings.dicom_port), CT], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    print(f"store behind 20 silent connections: {elapsed:.2f} s (ACSE timeout {timeout} s)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 3 * timeout
    # The node closes every silent connection after the ACSE timeout (ARTIM).
    assert all(closed_by_peer(sock, 3 * timeout) for sock in idle)
    for sock in idle:
        sock.close()


def test_connection_ceiling_frees_up_after_the_acse_timeout(make_scp: ScpFactory) -> None:
    timeout = 2.0
    scp = make_scp(dicom_acse_timeout=timeout, dicom_max_connections=5)
    idle = [socket.create_connection(("127.0.0.1", scp.settings.dicom_port)) for _ in range(20)]
    started = time.monotonic()
    first = echo(scp, "CT1")
    assert refused(first, "Local Limit Exceeded"), first.stdout + first.stderr
    wait_for(lambda: echo(scp, "CT1").returncode == 0, timeout=3 * timeout, interval=0.2,
             what="echo once the silent connections are closed")  # fmt: skip
    print(f"echo admitted {time.monotonic() - started:.2f} s after 20 silent connections "
          f"filled a ceiling of 5 (ACSE timeout {timeout} s)")  # fmt: skip
    for sock in idle:
        sock.close()


def test_malformed_settings_stop_the_node_at_start_up() -> None:
    with pytest.raises(ValueError, match="IP address or network"):
        Settings(allowed_calling_aets="CT1@ct1.hospital.example")
    with pytest.raises(ValueError, match="dicom_tls_cert"):
        Settings(dicom_tls_port=2762)
    with pytest.raises(ValueError, match="nothing would listen"):
        Settings(dicom_plaintext=False)
    with pytest.raises(ValueError, match="dicom_tls_ca"):
        Settings(dicom_tls_require_client_cert=True)
