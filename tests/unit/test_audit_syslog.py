"""The RFC 5424 framing of audit messages, the collector's address, and the settings
that turn syslog on (the sending itself is tested against rsyslogd in
tests/integration/test_audit_trail.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from node.audit.syslog import BOM, NOTICE, WARNING, SyslogAddress, rfc5424
from node.settings import Settings

AT = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def test_header_follows_rfc_5424_and_the_dicom_profile() -> None:
    framed = rfc5424(b"<AuditMessage/>", timestamp=AT, hostname="ainode-1", procid="4242")
    header, _, message = framed.partition(b" " + BOM)
    assert header == b"<85>1 2026-03-04T05:06:07.123456Z ainode-1 ainode 4242 DICOM+RFC3881 -"
    assert message == b"<AuditMessage/>"


def test_a_failure_is_a_warning_and_fields_stay_single_tokens() -> None:
    framed = rfc5424(b"x", timestamp=AT, hostname="bad host\u00e9", procid="", severity=WARNING)
    assert framed.startswith(b"<84>1 ")  # authpriv (10) * 8 + warning (4)
    fields = framed.split(b" ")[:7]
    assert fields[2] == b"bad_host_" and fields[4] == b"-"  # no spaces; empty is "-"
    assert rfc5424(b"x", timestamp=AT, hostname="h", procid="1", severity=NOTICE)[:5] == b"<85>1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("udp://collector", SyslogAddress("udp", "collector", 514)),
     ("tcp://10.0.0.5:1514", SyslogAddress("tcp", "10.0.0.5", 1514)),
     ("tls://arr.example.org", SyslogAddress("tls", "arr.example.org", 6514)),
     ("tls://[::1]:6514", SyslogAddress("tls", "::1", 6514))],
)  # fmt: skip
def test_collector_addresses(text: str, expected: SyslogAddress) -> None:
    assert SyslogAddress.parse(text) == expected


@pytest.mark.parametrize("text", ["collector:514", "http://collector", "udp://", "tcp:///x"])
def test_malformed_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="syslog address"):
        SyslogAddress.parse(text)


def test_settings_check_the_audit_syslog_at_start_up(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).audit_syslog == ""  # off by default
    assert Settings(data_dir=tmp_path, audit_syslog=" tcp://c:1 ").audit_syslog == "tcp://c:1"
    with pytest.raises(ValidationError, match="syslog address"):
        Settings(data_dir=tmp_path, audit_syslog="collector:514")
    with pytest.raises(ValidationError, match="go together"):
        Settings(data_dir=tmp_path, audit_syslog_cert=tmp_path / "node.crt")
