"""A fresh node (``ainode serve`` as ``make run`` starts it) lets its first admin in: the
password made at first start is in the data folder, readable by the node's user only,
never in the log, and signs in through the real server's form."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from node.auth.bootstrap import PASSWORD_FILE
from tests.node_process import start_node


def test_first_start_makes_an_admin_who_can_sign_in(tmp_path: Path) -> None:
    node = start_node(tmp_path / "node")
    try:
        secret = tmp_path / "node" / PASSWORD_FILE
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        password = secret.read_text().strip()
        assert len(password) >= 20
        with httpx.Client(base_url=node.url, timeout=30) as browser:
            page = browser.get("/", follow_redirects=True)
            assert str(page.url).endswith("/signin?next=/")
            csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            signed_in = browser.post(
                "/signin", data={"name": "admin", "password": password, "csrf_token": csrf}
            )
            assert signed_in.status_code == 303, signed_in.text
            me = browser.get("/api/session").json()
            assert (me["name"], me["role"], me["via"]) == ("admin", "admin", "session")
            assert browser.get("/docs").status_code == 200
        log = node.log(chars=200_000)
        assert PASSWORD_FILE in log and password not in log
    finally:
        node.stop()
    # A restart with the account in place makes no new one.
    restarted = start_node(tmp_path / "node")
    try:
        assert secret.read_text().strip() == password
    finally:
        restarted.stop()
