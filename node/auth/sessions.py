"""The signed session cookie a browser holds after signing in.

Stateless: the cookie carries who signed in (name, role, provider, subject) and the
session's CSRF secret, signed with HMAC-SHA256 (itsdangerous) and timestamped; it
expires ``AINODE_WEB_SESSION_SECONDS`` after sign-in. The cookie is HttpOnly,
SameSite=Strict, and Secure when the request came over https.

Any sign-in ends in :meth:`SessionSigner.issue`: the local form with the account id as
subject, an OpenID Connect callback with the provider's ``sub`` and a role it mapped.
For local accounts the web side re-reads the account on every request (a removed
account's sessions stop at once, a changed role applies at once); for other providers
the signed role holds until the session expires.

The key is ``AINODE_WEB_SESSION_SECRET`` or, when unset, a random key kept in the data
directory (``web-session.key``, mode 0600), so sessions survive a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from node.auth.roles import Role

log = logging.getLogger(__name__)

COOKIE = "ainode_session"
KEY_FILE = "web-session.key"
_SALT = "ainode.session"


@dataclass(frozen=True)
class SignedIn:
    """What a session cookie vouches for."""

    name: str
    role: Role
    provider: str  # "local", or e.g. "oidc:https://idp.example"
    subject: str  # local: the account id; OIDC: the provider's "sub" claim
    csrf: str  # this session's CSRF token (node.auth.csrf)


class SessionSigner:
    """Signs and reads session cookies with one key; ``max_age`` in seconds."""

    def __init__(self, key: bytes, max_age: float) -> None:
        self._serializer = URLSafeTimedSerializer(
            key, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        self.max_age = max_age

    def issue(self, name: str, role: Role, provider: str, subject: str) -> tuple[str, SignedIn]:
        """A new session for this identity: the cookie's value, and what it holds."""
        signed = SignedIn(name, role, provider, subject, secrets.token_urlsafe(32))
        value = self._serializer.dumps(
            {"n": name, "r": role.value, "p": provider, "s": subject, "c": signed.csrf}
        )
        return value, signed

    def read(self, value: str) -> SignedIn | None:
        """What a cookie holds; None when it is forged, altered, malformed or expired."""
        try:
            payload: Any = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:  # SignatureExpired is one
            return None
        try:
            return SignedIn(
                name=str(payload["n"]),
                role=Role(payload["r"]),
                provider=str(payload["p"]),
                subject=str(payload["s"]),
                csrf=str(payload["c"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def session_key(secret: str | None, data_dir: Path) -> bytes:
    """``secret`` when set; else the key file in ``data_dir``, made on first use."""
    if secret:
        return secret.encode("utf-8")
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text(encoding="ascii").strip()
        if len(key) < 32:
            raise ValueError(f"{path} holds no usable key; remove it to make a new one") from None
        return key.encode("ascii")
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
        out.flush()
        os.fsync(out.fileno())
    log.info("made a new session key in %s", path)
    return key.encode("ascii")


def cookie_options(secure: bool, max_age: float) -> dict[str, Any]:
    """The attributes every session cookie is set with (Starlette's ``set_cookie``)."""
    return {
        "max_age": int(max_age),
        "path": "/",
        "httponly": True,
        "samesite": "strict",
        "secure": secure,
    }
