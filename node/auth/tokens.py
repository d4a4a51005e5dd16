"""API tokens for scripts (``ainode tokens``), sent as ``Authorization: Bearer TOKEN``.

The one writer of ``ApiToken`` rows. A token is 256 random bits, shown once when it is
created; the node keeps only its sha256, which is enough for a secret that random (a
slow password hash would only slow every API call). Revoked tokens stay listed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from node.auth.accounts import utc
from node.auth.principal import Principal
from node.auth.roles import Role
from node.db.models import ApiToken, utcnow
from node.db.session import SessionFactory, transaction

PREFIX = "ainode_"
"""Every token starts so: a secret scanner, or a person, can tell what it is."""


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    info: TokenInfo
    token: str  # the secret itself: shown once, never stored


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    revoked = utc(row.revoked_at) if row.revoked_at is not None else None
    return TokenInfo(row.id, row.name, row.role, utc(row.created_at), revoked)


def principal_name(info: TokenInfo) -> str:
    return f"token:{info.name or info.id}"


class TokenStore:
    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions

    def create(self, role: Role, name: str = "") -> IssuedToken:
        if len(name) > 64:
            raise ValueError("a token's name has at most 64 characters")
        token = PREFIX + secrets.token_urlsafe(32)
        with transaction(self.sessions) as session:
            row = ApiToken(name=name, role=role, token_sha256=_digest(token))
            session.add(row)
            session.flush()
            return IssuedToken(_info(row), token)

    def list(self) -> list[TokenInfo]:
        with self.sessions() as session:
            return [_info(row) for row in session.scalars(select(ApiToken).order_by(ApiToken.id))]

    def revoke(self, token_id: int) -> bool:
        """Revoke the token; whether it was live. It stops working at once."""
        with transaction(self.sessions) as session:
            row = session.get(ApiToken, token_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            return True

    def authenticate(self, token: str) -> Principal | None:
        """Who a live token acts as; None for an unknown or revoked one."""
        if not token.startswith(PREFIX):
            return None
        with self.sessions() as session:
            row = session.scalars(
                select(ApiToken).where(
                    ApiToken.token_sha256 == _digest(token), ApiToken.revoked_at.is_(None)
                )
            ).one_or_none()
            if row is None:
                return None
            return Principal(principal_name(_info(row)), row.role, via="token", provider="token")
