"""A real syslog collector for the tests: Debian's rsyslogd, in the foreground with its
own configuration, on free high ports: UDP, TCP and TLS (rsyslog's OpenSSL netstream
driver, client certificates required and checked against the test CA).

Every message an input receives is written raw (``%rawmsg%``, framing removed) to one
file, a line each, after the input's name; ``messages`` parses them as RFC 5424. The
certificates come from :mod:`tests.pki`.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.node_process import wait_for
from tests.orthanc import free_port
from tests.pki import Pki

BOM = b"\xef\xbb\xbf"
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"  # sbin may be off a user's PATH
# <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
RFC5424 = re.compile(rb"<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\])(?: (.*))?$")


@dataclass(frozen=True)
class SyslogMessage:
    """One received message, split into its RFC 5424 fields."""

    input: str  # "udp", "tcp" or "tls"
    pri: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str
    msg: bytes  # as sent, BOM included

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8


@dataclass
class Rsyslog:
    directory: Path
    process: subprocess.Popen[bytes]
    udp_port: int
    tcp_port: int
    tls_port: int

    @property
    def output(self) -> Path:
        return self.directory / "received.log"

    def url(self, transport: str) -> str:
        port = {"udp": self.udp_port, "tcp": self.tcp_port, "tls": self.tls_port}[transport]
        host = "localhost" if transport == "tls" else "127.0.0.1"  # the certificate's name
        return f"{transport}://{host}:{port}"

    def messages(self) -> list[SyslogMessage]:
        if not self.output.exists():
            return []
        found = []
        for line in self.output.read_bytes().splitlines():
            name, _, raw = line.partition(b" ")
            match = RFC5424.match(raw)
            if match is None:
                continue
            pri, version, *fields, msg = match.groups()
            texts = [f.decode("utf-8") for f in fields]
            found.append(SyslogMessage(name.decode(), int(pri), int(version), *texts, msg or b""))
        return found

    def wait_for_message(self, marker: bytes, timeout: float = 30) -> SyslogMessage:
        """The first received message whose MSG holds ``marker``, once it has arrived."""
        return wait_for(
            lambda: next((m for m in self.messages() if marker in m.msg), None),
            timeout,
            interval=0.1,
            what=f"a syslog message holding {marker!r}",
        )

    def log(self) -> str:
        path = self.directory / "rsyslogd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _config(directory: Path, pki: Pki, udp: int, tcp: int, tls: int) -> str:
    tls_driver = (
        'streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="x509/certvalid" '
        f'streamDriver.CAFile="{pki.ca}" streamDriver.CertFile="{pki.server_cert}" '
        f'streamDriver.KeyFile="{pki.server_key}"'
    )
    return f"""
global(workDirectory="{directory}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%inputname% %rawmsg%\\n")
ruleset(name="audit") {{
    action(type="omfile" file="{directory / "received.log"}" template="raw")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" name="udp" ruleset="audit")
input(type="imtcp" address="127.0.0.1" port="{tcp}" name="tcp" ruleset="audit")
input(type="imtcp" address="127.0.0.1" port="{tls}" name="tls" ruleset="audit" {tls_driver})
action(type="omfile" file="{directory / "rsyslogd.log"}")
"""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start_rsyslog(directory: Path, pki: Pki) -> Rsyslog:
    """rsyslogd in the foreground with UDP, TCP and TLS inputs, once all three listen."""
    directory.mkdir(parents=True, exist_ok=True)
    udp, tcp, tls = free_port(), free_port(), free_port()
    config = directory / "rsyslog.conf"
    config.write_text(_config(directory, pki, udp, tcp, tls))
    process = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(config), "-i", str(directory / "rsyslogd.pid")],
        stdout=(directory / "stdout.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Rsyslog(directory, process, udp, tcp, tls)
    try:
        wait_for(lambda: _listening(tcp) and _listening(tls), 30, 0.1, "rsyslogd's TCP inputs")
        # UDP has no handshake: the input is up once a datagram comes out in the file.
        marker = uuid.uuid4().hex.encode()
        probe = b"<13>1 - - probe - - - " + marker
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            deadline = time.monotonic() + 30
            while marker not in (server.output.read_bytes() if server.output.exists() else b""):
                assert process.poll() is None, (directory / "stdout.log").read_text()
                assert time.monotonic() < deadline, "rsyslogd's UDP input never answered"
                sock.sendto(probe, ("127.0.0.1", udp))
                time.sleep(0.1)
    except BaseException:
        server.stop()
        raise
    return server
