"""``ainode users`` and ``ainode tokens`` as an operator runs them, on a fresh data folder:
the database is made on first use, passwords never echo, a token is printed once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from node.auth.accounts import AccountStore
from node.auth.roles import Role
from node.auth.tokens import TokenStore
from node.db.session import make_engine, make_session_factory
from node.settings import Settings

PASSWORD = "correct horse battery staple"


def ainode(*args: str, data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=120,
        env={"AINODE_DATA_DIR": str(data_dir), "AINODE_LOG_LEVEL": "WARNING",
             "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def stores(data_dir: Path) -> tuple[AccountStore, TokenStore]:
    sessions = make_session_factory(make_engine(Settings(data_dir=data_dir)))
    return AccountStore(sessions), TokenStore(sessions)


def test_users_add_list_remove(tmp_path: Path) -> None:
    added = ainode("users", "add", "alice", "--role", "operator", data_dir=tmp_path, stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert added.stdout == "account alice (operator) added\n"
    assert PASSWORD not in added.stdout + added.stderr
    secret = tmp_path / "bob.password"
    secret.write_text(PASSWORD + "-bob\n")
    by_file = ainode(
        "users", "add", "bob", "--role", "admin", "--password-file", str(secret), data_dir=tmp_path
    )
    assert by_file.returncode == 0, by_file.stderr

    accounts, _ = stores(tmp_path)
    alice = accounts.authenticate("alice", PASSWORD)
    assert alice is not None and alice.role is Role.OPERATOR
    assert accounts.authenticate("bob", PASSWORD + "-bob") is not None

    listed = ainode("users", "list", data_dir=tmp_path)
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [
        ["alice", "operator"],
        ["bob", "admin"],
    ]
    again = ainode("users", "add", "alice", "--role", "viewer", data_dir=tmp_path, stdin=PASSWORD)
    assert again.returncode == 2 and "exists already" in again.stderr
    weak = ainode("users", "add", "carol", "--role", "viewer", data_dir=tmp_path, stdin="short")
    assert weak.returncode == 2 and "at least 12 characters" in weak.stderr
    unknown = ainode("users", "add", "dave", "--role", "root", data_dir=tmp_path, stdin=PASSWORD)
    assert unknown.returncode == 2 and "one of viewer, operator, admin" in unknown.stderr

    assert ainode("users", "remove", "alice", data_dir=tmp_path).returncode == 0
    assert ainode("users", "remove", "alice", data_dir=tmp_path).returncode == 1
    assert accounts.authenticate("alice", PASSWORD) is None


def test_tokens_create_list_revoke(tmp_path: Path) -> None:
    created = ainode("tokens", "create", "--role", "viewer", "--name", "wall", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()  # the token alone on stdout: TOKEN=$(ainode tokens create ...)
    assert token.startswith("ainode_") and "\n" not in token
    assert "shown only now" in created.stderr
    _, tokens = stores(tmp_path)
    principal = tokens.authenticate(token)
    assert principal is not None and principal.role is Role.VIEWER

    listed = ainode("tokens", "list", data_dir=tmp_path)
    assert listed.stdout.split("\t")[:4] == ["1", "wall", "viewer", "live\n"]
    assert token not in listed.stdout  # never shown again
    assert ainode("tokens", "revoke", "1", data_dir=tmp_path).returncode == 0
    assert ainode("tokens", "revoke", "1", data_dir=tmp_path).returncode == 1
    assert tokens.authenticate(token) is None
    assert "\trevoked " in ainode("tokens", "list", data_dir=tmp_path).stdout
