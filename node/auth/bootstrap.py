"""The first admin: how someone signs in to a node that has no account yet.

At start-up (``ainode serve``), when the database holds no account at all, an account
``admin`` is made with a random password, written to ``DATA_DIR/initial-admin-password``
(mode 0600, readable by the node's user only) and never logged. Sign in with it, make
the real accounts with ``ainode users add``, then remove ``admin`` and the file. A node
where ``ainode users add`` ran before its first start makes nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from node.auth.accounts import AccountStore
from node.auth.roles import Role

log = logging.getLogger(__name__)

FIRST_ADMIN = "admin"
PASSWORD_FILE = "initial-admin-password"


def ensure_first_admin(accounts: AccountStore, data_dir: Path) -> Path | None:
    """Make the first admin when there is no account; the password file's path, or None."""
    if accounts.count():
        return None
    password = secrets.token_urlsafe(18)
    try:
        accounts.add(FIRST_ADMIN, Role.ADMIN, password)
    except ValueError:
        return None  # another process made an account meanwhile
    path = data_dir / PASSWORD_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a file left from an earlier database
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password + "\n")
    except OSError:
        accounts.remove(FIRST_ADMIN)  # nobody could ever learn its password
        raise
    log.warning(
        "no account existed: made %r (role admin); its password is in %s. Sign in, add "
        "accounts with `ainode users add NAME --role ROLE`, then remove it and the file",
        FIRST_ADMIN,
        path,
    )
    return path
