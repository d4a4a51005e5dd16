"""``ainode users ...`` and ``ainode tokens ...``: accounts and API tokens from a shell.

Each command brings the database schema up to date first, so accounts can be made
before the node's first start. A password comes from ``--password-file``, else from
standard input when it is not a terminal (one line), else from a prompt (asked twice).
A token is printed once, when created; the node keeps only its hash.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from node.auth.accounts import AccountStore
from node.auth.roles import Role, parse_role
from node.auth.tokens import TokenStore
from node.db.session import SessionFactory
from node.settings import Settings


def _sessions(settings: Settings) -> SessionFactory:
    from node.db.migrate import upgrade_to_head
    from node.db.session import make_engine, make_session_factory

    engine = make_engine(settings)
    upgrade_to_head(engine)
    return make_session_factory(engine)


def _role(text: str) -> Role:
    try:
        return parse_role(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        return args.password_file.read_text(encoding="utf-8").splitlines()[0]
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _users_add(settings: Settings, args: argparse.Namespace) -> int:
    try:
        password = _read_password(args)
        info = AccountStore(_sessions(settings)).add(args.name, args.role, password)
    except (ValueError, IndexError, OSError) as exc:
        reason = "the password file is empty" if isinstance(exc, IndexError) else str(exc)
        print(f"ainode users add: {reason}", file=sys.stderr)
        return 2
    print(f"account {info.name} ({info.role.value}) added")
    return 0


def _users_list(settings: Settings, _args: argparse.Namespace) -> int:
    for info in AccountStore(_sessions(settings)).list():
        print(f"{info.name}\t{info.role.value}\t{info.created_at.isoformat()}")
    return 0


def _users_remove(settings: Settings, args: argparse.Namespace) -> int:
    if not AccountStore(_sessions(settings)).remove(args.name):
        print(f"ainode users remove: no account named {args.name!r}", file=sys.stderr)
        return 1
    print(f"account {args.name} removed; its sessions no longer work")
    return 0


def _tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        issued = TokenStore(_sessions(settings)).create(args.role, args.name)
    except ValueError as exc:
        print(f"ainode tokens create: {exc}", file=sys.stderr)
        return 2
    print(
        f"token {issued.info.id} ({issued.info.role.value}) created; it is shown only now:",
        file=sys.stderr,
    )
    print(issued.token)
    return 0


def _tokens_list(settings: Settings, _args: argparse.Namespace) -> int:
    for info in TokenStore(_sessions(settings)).list():
        state = f"revoked {info.revoked_at.isoformat()}" if info.revoked_at else "live"
        print(f"{info.id}\t{info.name or '-'}\t{info.role.value}\t{state}")
    return 0


def _tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    if not TokenStore(_sessions(settings)).revoke(args.id):
        print(f"ainode tokens revoke: no live token {args.id}", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``users`` and ``tokens`` on the ``ainode`` parser's subcommands."""
    roles = ", ".join(role.value for role in Role)
    users = commands.add_parser("users", help="accounts that sign in to the dashboard")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    add = user_commands.add_parser("add", help="add an account (password prompted)")
    add.add_argument("name")
    add.add_argument("--role", type=_role, required=True, help=roles)
    add.add_argument("--password-file", type=Path, help="read the password from this file")
    add.set_defaults(run=_users_add)
    user_commands.add_parser("list", help="list accounts").set_defaults(run=_users_list)
    remove = user_commands.add_parser("remove", help="remove an account")
    remove.add_argument("name")
    remove.set_defaults(run=_users_remove)

    tokens = commands.add_parser("tokens", help="API tokens for scripts (Bearer)")
    token_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    create = token_commands.add_parser("create", help="create a token; printed once")
    create.add_argument("--role", type=_role, required=True, help=roles)
    create.add_argument("--name", default="", help="what the token is for")
    create.set_defaults(run=_tokens_create)
    token_commands.add_parser("list", help="list tokens").set_defaults(run=_tokens_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(run=_tokens_revoke)
