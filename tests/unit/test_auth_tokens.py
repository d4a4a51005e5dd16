"""API tokens and accounts in a real (SQLite) database: shown once, kept hashed,
revocable; accounts checked against argon2 hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from node.auth.accounts import AccountStore
from node.auth.bootstrap import PASSWORD_FILE, ensure_first_admin
from node.auth.roles import Role
from node.auth.tokens import PREFIX, TokenStore
from node.db.migrate import upgrade_to_head
from node.db.models import Account, ApiToken
from node.db.session import SessionFactory, make_engine, make_session_factory
from node.settings import Settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[SessionFactory]:
    engine = make_engine(Settings(data_dir=tmp_path))
    upgrade_to_head(engine)  # the migration's tables, not create_all's
    yield make_session_factory(engine)
    engine.dispose()


def test_a_token_is_shown_once_and_kept_as_its_sha256(sessions: SessionFactory) -> None:
    store = TokenStore(sessions)
    issued = store.create(Role.OPERATOR, "nightly export")
    assert issued.token.startswith(PREFIX) and len(issued.token) > 40
    with sessions() as s:
        row = s.scalars(select(ApiToken)).one()
        assert row.token_sha256 == hashlib.sha256(issued.token.encode()).hexdigest()
        assert issued.token not in (row.name, row.token_sha256)
    principal = store.authenticate(issued.token)
    assert principal is not None
    assert (principal.name, principal.role, principal.via) == (
        "token:nightly export",
        Role.OPERATOR,
        "token",
    )
    assert store.authenticate(issued.token + "x") is None
    assert store.authenticate("no prefix") is None
    assert store.create(Role.VIEWER).token != issued.token


def test_a_revoked_token_stops_working_and_stays_listed(sessions: SessionFactory) -> None:
    store = TokenStore(sessions)
    issued = store.create(Role.ADMIN)
    assert store.revoke(issued.info.id)
    assert not store.revoke(issued.info.id)  # already revoked
    assert not store.revoke(9999)
    assert store.authenticate(issued.token) is None
    (listed,) = store.list()
    assert listed.revoked_at is not None and listed.role is Role.ADMIN


def test_accounts_check_passwords_and_keep_only_hashes(sessions: SessionFactory) -> None:
    accounts = AccountStore(sessions)
    info = accounts.add("alice", Role.OPERATOR, PASSWORD)
    with sessions() as s:
        assert s.scalars(select(Account.password_hash)).one().startswith("$argon2id$")
    assert accounts.authenticate("alice", PASSWORD) == info
    assert accounts.authenticate("alice", PASSWORD + "!") is None
    assert accounts.authenticate("bob", PASSWORD) is None
    with pytest.raises(ValueError, match="exists already"):
        accounts.add("alice", Role.ADMIN, PASSWORD)
    for name in ("", "-alice", "a b", "x" * 65, "ülrich"):
        with pytest.raises(ValueError, match="account name"):
            accounts.add(name, Role.VIEWER, PASSWORD)
    with pytest.raises(ValueError, match="at least"):
        accounts.add("carol", Role.VIEWER, "short")
    assert [a.name for a in accounts.list()] == ["alice"]
    assert accounts.remove("alice") and not accounts.remove("alice")
    assert accounts.authenticate("alice", PASSWORD) is None


def test_the_first_admin_is_made_once(sessions: SessionFactory, tmp_path: Path) -> None:
    accounts = AccountStore(sessions)
    path = ensure_first_admin(accounts, tmp_path)
    assert path == tmp_path / PASSWORD_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    password = path.read_text().strip()
    admin = accounts.authenticate("admin", password)
    assert admin is not None and admin.role is Role.ADMIN
    assert ensure_first_admin(accounts, tmp_path) is None  # an account exists now
    assert path.read_text().strip() == password
