"""CSRF checks, signed session cookies and Host names, without a server."""

from __future__ import annotations

import hashlib
import stat
import time
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from node.auth.csrf import cross_site_reason, tokens_match
from node.auth.hosts import host_of, normalize_host
from node.auth.roles import Role
from node.auth.sessions import KEY_FILE, SessionSigner, session_key

OWN = "http://127.0.0.1:8080"


def test_tokens_match_only_when_equal_and_present() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("abc", None)
    assert not tokens_match("", "")


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a client that is not a browser: the token alone decides
        {"sec-fetch-site": "same-origin", "origin": OWN},
        {"sec-fetch-site": "none"},  # typed into the address bar
        {"origin": OWN + "/"},
    ],
)
def test_own_pages_pass(headers: dict[str, str]) -> None:
    assert cross_site_reason(headers, OWN) is None


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"sec-fetch-site": "cross-site"}, "Sec-Fetch-Site"),
        ({"sec-fetch-site": "same-site"}, "Sec-Fetch-Site"),  # another port, same host
        ({"origin": "http://127.0.0.1:9999"}, "Origin"),
        ({"origin": "https://127.0.0.1:8080"}, "Origin"),
        ({"origin": "null"}, "Origin"),  # sandboxed frames, data: pages
    ],
)
def test_other_sites_are_refused(headers: dict[str, str], why: str) -> None:
    reason = cross_site_reason(headers, OWN)
    assert reason is not None and why in reason


def test_a_session_cookie_round_trips_and_resists_tampering() -> None:
    signer = SessionSigner(b"k" * 32, max_age=3600)
    value, signed = signer.issue("alice", Role.OPERATOR, "local", "7")
    assert signer.read(value) == signed
    assert len(signed.csrf) >= 32
    # A character inside the signature: the last one also carries two unused bits, so
    # changing it may decode to the same signature.
    inside = value[-10]
    assert signer.read(value[:-10] + ("A" if inside != "A" else "B") + value[-9:]) is None
    assert SessionSigner(b"x" * 32, max_age=3600).read(value) is None  # another key
    assert signer.read("not a cookie") is None
    # A second sign-in is a second session with its own CSRF token.
    assert signer.issue("alice", Role.OPERATOR, "local", "7")[1].csrf != signed.csrf


def test_a_session_expires() -> None:
    signer = SessionSigner(b"k" * 32, max_age=3600)
    value, _ = signer.issue("alice", Role.VIEWER, "local", "7")
    assert signer.read(value) is not None

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3601  # signed an hour and a second ago

    old = URLSafeTimedSerializer(
        b"k" * 32,
        salt="ainode.session",
        signer=Earlier,
        signer_kwargs={"digest_method": hashlib.sha256},
    ).dumps({"n": "alice", "r": "viewer", "p": "local", "s": "7", "c": "x" * 43})
    assert signer.read(old) is None
    assert SessionSigner(b"k" * 32, max_age=7200).read(old) is not None  # same key, younger


def test_the_session_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    key = session_key(None, tmp_path)
    assert len(key) == 64
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert session_key(None, tmp_path) == key  # survives a restart
    assert session_key("s" * 32, tmp_path) == b"s" * 32  # the setting wins
    (tmp_path / KEY_FILE).write_text("short\n")
    with pytest.raises(ValueError, match="no usable key"):
        session_key(None, tmp_path)


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("LocalHost.", "localhost"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("node.example:443", "node.example"),
        ("::1", None),  # a bare IPv6 address is not a Host header
        ("a:b:c", None),
        ("host:port", None),
        ("[::1]junk", None),
        ("", None),
    ],
)
def test_host_of_a_header(header: str, host: str | None) -> None:
    assert host_of(header) == host


def test_allowed_names_are_normalized() -> None:
    assert normalize_host(" Node.Example. ") == "node.example"
    assert normalize_host("[::1]") == "::1"
    with pytest.raises(ValueError):
        normalize_host(" ")
