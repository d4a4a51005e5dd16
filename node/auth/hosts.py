"""Host names as the web server's Host allow-list compares them (DNS rebinding defence).

A page on an attacker's domain that rebinds its name to the node's address still sends
its own name in the ``Host`` header; answering only the names the node is known by
stops it reading anything.
"""

from __future__ import annotations


def normalize_host(name: str) -> str:
    """``"LocalHost."`` -> ``"localhost"``, ``"[::1]"`` -> ``"::1"``."""
    host = name.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError("an allowed host may not be empty")
    return host


def host_of(header: str) -> str | None:
    """The host name of a ``Host`` header (port dropped); None when malformed."""
    value = header.strip()
    if value.startswith("["):  # [v6]:port
        end = value.find("]")
        if end < 0 or (end + 1 < len(value) and not value[end + 1 :].startswith(":")):
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        value, _, port = value.partition(":")
        if not port.isdigit():
            return None
    elif ":" in value:
        return None  # a bare IPv6 address is not a valid Host header
    value = value.lower().rstrip(".")
    return value or None
