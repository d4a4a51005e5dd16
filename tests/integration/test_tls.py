"""DICOM TLS on its own port, with DCMTK's echoscu/storescu (+tls) as the real peer.

The certificate chain is made here with the ``openssl`` command line: a CA, the node's
certificate and a client certificate it signed, and a client certificate from another
CA that the node must not trust.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from node.acceptor.record import AssociationRecord
from node.db.migrate import upgrade_to_head
from node.db.models import Instance
from node.db.session import make_engine, make_session_factory
from node.scp import StorageSCP, log_association
from node.settings import Settings
from node.tls import MINIMUM_VERSION
from tests.node_process import start_node, wait_for
from tests.orthanc import free_port
from tests.pki import make_ca, make_leaf
from tests.scu import closed_by_peer

CT = str(get_testdata_file("CT_small.dcm", download=False))


@dataclass(frozen=True)
class Chain:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate signed by another CA
    stranger_key: Path


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca(directory, "hospital-ca"), make_ca(directory, "other-ca")
    server_extensions = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    server = make_leaf(directory, "localhost", ca, server_extensions)
    client = make_leaf(directory, "PACS", ca, "extendedKeyUsage=clientAuth")
    stranger = make_leaf(directory, "STRANGER", other_ca, "extendedKeyUsage=clientAuth")
    return Chain(ca[0], *server, *client, *stranger)


def _scp(
    tmp_path: Path,
    chain: Chain,
    on_association: Callable[[AssociationRecord], None] = log_association,
    **settings: object,
) -> Iterator[StorageSCP]:
    values: dict[str, object] = {
        "data_dir": tmp_path / "var",
        "dicom_bind": "127.0.0.1",
        "dicom_port": free_port(),
        "dicom_tls_port": free_port(),
        "dicom_tls_cert": chain.server_cert,
        "dicom_tls_key": chain.server_key,
        "dicom_tls_ca": chain.ca,
        "dicom_tls_require_client_cert": True,
        **settings,
    }
    config = Settings(**values)  # type: ignore[arg-type]
    engine = make_engine(config)
    upgrade_to_head(engine)
    node = StorageSCP(config, make_session_factory(engine), on_association=on_association)
    node.start()
    yield node
    node.stop()
    engine.dispose()


@pytest.fixture
def scp(tmp_path: Path, chain: Chain) -> Iterator[StorageSCP]:
    """Client certificates required."""
    yield from _scp(tmp_path, chain)


def dcmtk(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], env={**os.environ, "TCP_NODELAY": "1"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def tls_port(scp: StorageSCP) -> str:
    assert scp.settings.dicom_tls_port is not None
    return str(scp.settings.dicom_tls_port)


def client_tls(chain: Chain) -> list[str | Path]:
    """DCMTK options: our client certificate, and the CA the node's certificate is checked on."""
    return ["+tls", chain.client_key, chain.client_cert, "+cf", chain.ca]


def stored(scp: StorageSCP) -> int:
    with scp.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_echo_and_store_over_tls_with_a_client_certificate(scp: StorageSCP, chain: Chain) -> None:
    port = tls_port(scp)
    echo = dcmtk("echoscu", *client_tls(chain), "-aet", "PACS", "-aec", "AINODE",
                 "127.0.0.1", port)  # fmt: skip
    assert echo.returncode == 0, echo.stdout + echo.stderr
    store = dcmtk("storescu", *client_tls(chain), "-aet", "PACS", "-aec", "AINODE",
                  "127.0.0.1", port, CT)  # fmt: skip
    assert store.returncode == 0, store.stdout + store.stderr
    assert stored(scp) == 1
    # The plaintext port stays as it was.
    plain = dcmtk("echoscu", "-aec", "AINODE", "127.0.0.1", str(scp.settings.dicom_port))
    assert plain.returncode == 0, plain.stderr


def test_plaintext_on_the_tls_port_is_refused(scp: StorageSCP) -> None:
    port = tls_port(scp)
    echo = dcmtk("echoscu", "-aec", "AINODE", "-ta", "10", "127.0.0.1", port)
    assert echo.returncode != 0
    store = dcmtk("storescu", "-aec", "AINODE", "-ta", "10", "127.0.0.1", port, CT)
    assert store.returncode != 0
    assert stored(scp) == 0
    assert scp.listening  # the listener survives the garbage


def test_failed_handshakes_are_on_record(tmp_path: Path, chain: Chain) -> None:
    records: list[AssociationRecord] = []
    for scp in _scp(tmp_path, chain, on_association=records.append):
        stranger = dcmtk("echoscu", "+tls", chain.stranger_key, chain.stranger_cert, "+cf",
                         chain.ca, "-aec", "AINODE", "127.0.0.1", tls_port(scp))  # fmt: skip
        assert stranger.returncode != 0
        wait_for(lambda: bool(records), timeout=10, interval=0.05, what="the record")
    (record,) = records
    assert record.outcome.startswith("TLS handshake failed")
    assert record.address == "127.0.0.1" and not record.calling_ae_title


def test_client_certificates_required(scp: StorageSCP, chain: Chain) -> None:
    port = tls_port(scp)
    # TLS without a client certificate (the client still checks the node's).
    anonymous = dcmtk("storescu", "+tla", "+cf", chain.ca, "-aec", "AINODE",
                      "127.0.0.1", port, CT)  # fmt: skip
    assert anonymous.returncode != 0
    stranger = dcmtk("storescu", "+tls", chain.stranger_key, chain.stranger_cert, "+cf",
                     chain.ca, "-aec", "AINODE", "127.0.0.1", port, CT)  # fmt: skip
    assert stranger.returncode != 0
    assert stored(scp) == 0
    trusted = dcmtk("storescu", *client_tls(chain), "-aec", "AINODE", "127.0.0.1", port, CT)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert stored(scp) == 1


def test_client_certificates_optional_still_verified(tmp_path: Path, chain: Chain) -> None:
    for scp in _scp(tmp_path, chain, dicom_tls_require_client_cert=False):
        port = tls_port(scp)
        anonymous = dcmtk("echoscu", "+tla", "+cf", chain.ca, "-aec", "AINODE",
                          "127.0.0.1", port)  # fmt: skip
        assert anonymous.returncode == 0, anonymous.stdout + anonymous.stderr
        # A certificate the CA did not sign is refused even when none is required.
        stranger = dcmtk("echoscu", "+tls", chain.stranger_key, chain.stranger_cert, "+cf",
                         chain.ca, "-aec", "AINODE", "127.0.0.1", port)  # fmt: skip
        assert stranger.returncode != 0


def _tls11_client() -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 offers TLS 1.1 only at level 0
    return context


def _tls11_control_server(chain: Chain) -> tuple[int, threading.Thread, list[str]]:
    """A server that does accept TLS 1.1: proves the client below really offers it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(chain.server_cert, chain.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    versions: list[str] = []

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as secured:
                versions.append(str(secured.version()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, versions


def test_tls_1_1_is_refused(scp: StorageSCP, chain: Chain) -> None:
    client = _tls11_client()
    port, thread, versions = _tls11_control_server(chain)
    with client.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as tls:
        assert tls.version() == "TLSv1.1"
    thread.join(10)
    assert versions == ["TLSv1.1"]
    raw = socket.create_connection(("127.0.0.1", int(tls_port(scp))), timeout=10)
    with pytest.raises(ssl.SSLError):
        client.wrap_socket(raw)
    raw.close()
    assert ssl.TLSVersion.TLSv1_2 == MINIMUM_VERSION


def test_a_silent_connection_does_not_hold_the_tls_listener(tmp_path: Path, chain: Chain) -> None:
    timeout = 2.0
    for scp in _scp(tmp_path, chain, dicom_acse_timeout=timeout):
        port = int(tls_port(scp))
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        started = time.monotonic()
        echo = dcmtk("echoscu", *client_tls(chain), "-aec", "AINODE", "127.0.0.1", str(port))
        elapsed = time.monotonic() - started
        print(f"TLS echo behind 20 silent connections: {elapsed:.2f} s (ACSE timeout {timeout} s)")
        assert echo.returncode == 0, echo.stdout + echo.stderr
        assert elapsed < 3 * timeout
        # The node closes each one once its handshake timed out.
        assert all(closed_by_peer(sock, 3 * timeout) for sock in idle)
        for sock in idle:
            sock.close()


def test_serve_health_counts_both_listeners(tmp_path: Path, chain: Chain) -> None:
    tls = free_port()
    node = start_node(
        tmp_path / "node",
        dicom_tls_port=str(tls),
        dicom_tls_cert=str(chain.server_cert),
        dicom_tls_key=str(chain.server_key),
        dicom_tls_ca=str(chain.ca),
        dicom_tls_require_client_cert="true",
    )
    try:
        health = node.get("/healthz")
        assert health["scp"] is True  # type: ignore[index]
        echo = dcmtk("echoscu", *client_tls(chain), "-aec", "AINODE", "127.0.0.1", str(tls))
        assert echo.returncode == 0, echo.stdout + echo.stderr + node.log()
        plain = dcmtk("echoscu", "-aec", "AINODE", "127.0.0.1", str(node.dicom_port))
        assert plain.returncode == 0, plain.stderr
    finally:
        node.stop()


def test_listening_means_every_configured_listener(tmp_path: Path, chain: Chain) -> None:
    for scp in _scp(tmp_path, chain):
        assert scp.listening
        assert scp._tls_server is not None
        scp._tls_server.shutdown()  # the TLS listener alone goes down
        scp._tls_server = None
        assert not scp.listening
    for scp in _scp(tmp_path, chain, dicom_plaintext=False):
        assert scp.listening
        assert scp._server is None
        plain = dcmtk("echoscu", "-aec", "AINODE", "-to", "5", "127.0.0.1",
                      str(scp.settings.dicom_port))  # fmt: skip
        assert plain.returncode != 0
