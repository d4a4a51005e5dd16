"""Who may use the web side: the tables of accounts and API tokens.

``Account`` rows are written by ``node.auth.accounts.AccountStore`` only, ``ApiToken``
rows by ``node.auth.tokens.TokenStore`` only. Neither table holds a secret: an
account keeps its argon2id hash, a token its sha256.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Enum, String
from sqlalchemy.orm import Mapped, mapped_column

from node.auth.roles import Role
from node.db.declarative import Base, utcnow


class Account(Base):
    __tablename__ = "account"  # people who sign in with a password (ainode users add)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, node.auth.passwords
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_token"  # bearer tokens for scripts; only their sha256 is kept

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
