"""Failed sign-ins throttled and role refusals recorded, over the real app and a real
audit trail (SQLite, then PostgreSQL): five wrong passwords, then the right one is
429 with ``Retry-After``; a viewer's 403 is a refusal an admin reads in ``/api/audit``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from node.audit.trail import AuditTrail
from node.audit.web_actions import action_recorder
from node.auth.roles import Role
from node.db.migrate import upgrade_to_head
from node.db.session import make_engine, make_session_factory
from node.settings import Settings
from node.web import create_app
from tests.web_node import BASE_URL, PASSWORD, add_principals, make_retry, seed


@pytest.fixture
def web(database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[Role, str]]]:
    """The real app over a seeded database, its actions told to a real trail."""
    settings = Settings(data_dir=tmp_path, database_url=database_url, ae_title="AINODE_T")
    assert (settings.signin_max_failures, settings.signin_window_seconds) == (5, 900)
    engine = make_engine(settings)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    seed(sessions)
    tokens = add_principals(sessions)
    trail = AuditTrail.from_settings(settings, sessions)
    app = create_app(
        settings,
        sessions,
        health=lambda: {"database": True},
        retry_job=make_retry(sessions),
        record_action=action_recorder(trail),
    )
    with TestClient(app, base_url=BASE_URL) as client:
        yield client, tokens
    trail.close()
    engine.dispose()


def _sign_in(client: TestClient, name: str, password: str) -> tuple[int, dict[str, str]]:
    form = client.get("/signin")
    csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    data = {"name": name, "password": password, "csrf_token": csrf, "next": "/"}
    response = client.post("/signin", data=data, follow_redirects=False)
    return response.status_code, dict(response.headers)


def _audit(client: TestClient, tokens: dict[Role, str]) -> list[dict]:
    admin = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
    response = client.get("/api/audit", headers=admin)
    assert response.status_code == 200, response.text
    return list(reversed(response.json()))  # oldest first


def test_five_wrong_passwords_then_the_right_one_is_429(
    web: tuple[TestClient, dict[Role, str]],
) -> None:
    client, tokens = web
    for _ in range(5):
        assert _sign_in(client, "operator", "not the password")[0] == 401
    code, headers = _sign_in(client, "operator", PASSWORD)
    assert code == 429
    assert 1 <= int(headers["retry-after"]) <= 900
    assert _sign_in(client, "admin", PASSWORD)[0] == 429  # the same address, another name
    sign_ins = [row for row in _audit(client, tokens) if row["kind"] == "sign_in"]
    assert [row["detail"]["reason"] for row in sign_ins] == [
        *["wrong name or password"] * 5,
        *["too many failed sign-ins"] * 2,
    ]
    assert all(row["outcome_text"] == "minor failure" for row in sign_ins)


def test_a_viewers_403_is_a_refusal_in_the_audit_trail(
    web: tuple[TestClient, dict[Role, str]],
) -> None:
    client, tokens = web
    viewer = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
    assert client.get("/api/audit", headers=viewer).status_code == 403
    refusals = [row for row in _audit(client, tokens) if row["detail"].get("action") == "refused"]
    assert len(refusals) == 1
    (refusal,) = refusals
    assert (refusal["actor"], refusal["actor_role"]) == ("token:viewer-script", "viewer")
    assert refusal["outcome_text"] == "minor failure"
    assert refusal["detail"]["target"] == "/api/audit"
    assert refusal["detail"]["reason"].startswith("role viewer may not GET /api/audit")
