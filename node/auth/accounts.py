"""Local accounts: people who sign in with a name and a password (``ainode users``).

The one writer of ``Account`` rows. Passwords are checked against argon2id hashes
(:mod:`node.auth.passwords`); a hash made with older parameters is replaced on the
next successful sign-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from node.auth.passwords import (
    check_strength,
    hash_password,
    needs_rehash,
    spend_a_verification,
    verify_password,
)
from node.auth.roles import Role
from node.db.models import Account
from node.db.session import SessionFactory, transaction

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""An account name: letters, digits and ``._@-``, at most 64, not starting with a sign."""


@dataclass(frozen=True)
class AccountInfo:
    id: int
    name: str
    role: Role
    created_at: datetime


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _info(row: Account) -> AccountInfo:
    return AccountInfo(row.id, row.name, row.role, utc(row.created_at))


class AccountStore:
    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions

    def add(self, name: str, role: Role, password: str) -> AccountInfo:
        """A new account; ValueError when the name is taken or malformed, or the password
        too weak."""
        if not NAME.fullmatch(name):
            raise ValueError(
                f"account name {name!r}: 1-64 letters, digits or ._@-, starting with a "
                "letter or digit"
            )
        check_strength(password)
        hashed = hash_password(password)
        try:
            with transaction(self.sessions) as session:
                row = Account(name=name, role=role, password_hash=hashed)
                session.add(row)
                session.flush()
                return _info(row)
        except IntegrityError:
            raise ValueError(f"an account named {name!r} exists already") from None

    def remove(self, name: str) -> bool:
        """Remove the account; whether it existed. Its sessions stop working at once."""
        with transaction(self.sessions) as session:
            row = session.scalars(select(Account).where(Account.name == name)).one_or_none()
            if row is None:
                return False
            session.delete(row)
            return True

    def list(self) -> list[AccountInfo]:
        with self.sessions() as session:
            return [_info(row) for row in session.scalars(select(Account).order_by(Account.name))]

    def count(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(Account)) or 0

    def get(self, account_id: int) -> AccountInfo | None:
        with self.sessions() as session:
            row = session.get(Account, account_id)
            return _info(row) if row is not None else None

    def authenticate(self, name: str, password: str) -> AccountInfo | None:
        """The account when ``password`` is its password; None otherwise (same cost)."""
        with self.sessions() as session:
            row = session.scalars(select(Account).where(Account.name == name)).one_or_none()
            stored = row.password_hash if row is not None else None
            found = _info(row) if row is not None else None
        if stored is None or found is None:
            spend_a_verification(password)
            return None
        if not verify_password(stored, password):
            return None
        if needs_rehash(stored):
            with transaction(self.sessions) as session:
                current = session.get(Account, found.id)
                if current is not None and current.password_hash == stored:
                    current.password_hash = hash_password(password)
        return found
