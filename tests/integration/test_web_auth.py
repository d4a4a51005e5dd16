"""Who may use the web side, over a real database (SQLite, then PostgreSQL): sign-in,
API tokens, sessions, CSRF, the Host allow-list, security headers, /docs and /metrics.

Everything goes through the real app (``TestClient``): the accounts and tokens are rows
made by the stores, the session cookie is the one the sign-in form sets.
"""

from __future__ import annotations

import hashlib

import pytest
from fastapi.routing import iter_route_contexts
from itsdangerous import URLSafeTimedSerializer

from node.auth.roles import Role
from node.auth.sessions import COOKIE
from node.auth.tokens import TokenStore
from node.db.models import Job, JobState
from tests.web_node import BASE_URL, PASSWORD, Node, job_id_of, served_node

OPEN = {"/healthz", "/signin", "/signout"}  # answer without credentials
PAGES = {"/", "/docs", "/redoc"}  # send a browser without a session to the sign-in page
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def form_token(page: str) -> str:
    """The CSRF token of the sign-in form on ``page``."""
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def _concrete(path: str) -> str:
    return path.replace("{job_id}", "1").replace("{asset}", "swagger-ui.css")


def test_every_route_needs_a_principal(node: Node) -> None:
    anonymous = node.as_role(None)
    checked = 0
    for route in iter_route_contexts(node.app.routes):
        if not route.methods or route.path in OPEN:  # the /static mount has no methods
            continue
        for method in route.methods:
            response = anonymous.request(method, _concrete(route.path), follow_redirects=False)
            if route.path in PAGES:
                assert response.status_code == 303, (method, route.path)
                assert response.headers["location"].startswith("/signin?next=")
            else:
                assert response.status_code == 401, (method, route.path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
            checked += 1
    assert checked >= 12  # every API route, the pages, /metrics, /openapi.json, the docs
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/signin").status_code == 200
    assert anonymous.get("/static/app.js").status_code == 200  # code, not data


def test_bearer_tokens_unknown_revoked_and_malformed(node: Node) -> None:
    viewer = node.as_role(Role.VIEWER)
    assert viewer.get("/api/jobs").status_code == 200
    me = viewer.get("/api/session").json()
    assert me == {
        "name": "token:viewer-script",
        "role": "viewer",
        "provider": "token",
        "via": "token",
        "sees_identifiers": False,
        "csrf_token": None,
    }
    anonymous = node.as_role(None)
    for header in ("Bearer ainode_not-a-token", "Bearer ", "Basic dXNlcjpwdw==", "Bearer"):
        response = anonymous.get("/api/jobs", headers={"Authorization": header})
        assert response.status_code == 401, header

    store = TokenStore(node.sessions)
    issued = store.create(Role.OPERATOR, "cron")
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert anonymous.get("/api/jobs", headers=headers).status_code == 200
    assert store.revoke(issued.info.id)
    response = anonymous.get("/api/jobs", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "unknown or revoked API token"}
    # A bad token is refused even beside a good session: never a silent fall-back.
    client, _csrf = node.signed_in(Role.ADMIN)
    assert client.get("/api/jobs", headers=headers).status_code == 401


def test_sign_in_through_the_form_sets_a_strict_http_only_cookie(node: Node) -> None:
    anonymous = node.as_role(None)
    form = anonymous.get("/signin", params={"next": "/"})
    assert 'name="csrf_token"' in form.text and form.headers["cache-control"] == "no-store"
    wrong = anonymous.post(
        "/signin",
        data={"name": "operator", "password": "nope" * 4, "csrf_token": form_token(form.text)},
    )
    assert wrong.status_code == 401
    assert "Wrong name or password." in wrong.text
    assert COOKIE not in anonymous.cookies

    response = anonymous.post(
        "/signin",
        # The form answered again comes with a fresh token.
        data={"name": "operator", "password": PASSWORD, "csrf_token": form_token(wrong.text)},
        follow_redirects=False,
    )
    assert (response.status_code, response.headers["location"]) == (303, "/")
    cookie = next(
        value
        for name, value in response.headers.multi_items()
        if name == "set-cookie" and value.startswith(COOKIE + "=")
    ).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http here; set over https
    assert anonymous.get("/").status_code == 200
    assert anonymous.get("/api/session").json()["name"] == "operator"
    assert [(a.action, a.actor, a.succeeded) for a in node.actions] == [
        ("sign_in", "operator", False),
        ("sign_in", "operator", True),
    ]


def test_sign_in_form_refuses_other_sites_and_stale_forms(node: Node) -> None:
    anonymous = node.as_role(None)
    form = anonymous.get("/signin")
    fields = {"name": "admin", "password": PASSWORD, "csrf_token": form_token(form.text)}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = anonymous.post("/signin", data=fields, headers=headers)
        assert response.status_code == 403, headers
    stale = anonymous.post("/signin", data={**fields, "csrf_token": "forged"})
    assert stale.status_code == 403 and "expired" in stale.text
    assert COOKIE not in anonymous.cookies
    # After signing in, ``next`` only ever leads to a path on this node.
    for target, lands in (
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/docs", "/docs"),
    ):
        anonymous.cookies.clear()
        fields["csrf_token"] = form_token(anonymous.get("/signin").text)
        response = anonymous.post(
            "/signin", data={**fields, "next": target}, follow_redirects=False
        )
        assert response.headers["location"] == lands, target


def test_a_session_needs_the_csrf_token_to_change_anything(node: Node) -> None:
    client, csrf = node.signed_in(Role.OPERATOR)
    job_id = job_id_of(node, "bleed")
    url = f"/api/jobs/{job_id}/retry"
    refusals = [
        {},  # no token
        {"X-CSRF-Token": "wrong"},
        {"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-site"},  # another port, same host
    ]
    for headers in refusals:
        response = client.post(url, headers=headers)
        assert response.status_code == 403, (headers, response.text)
    with node.sessions() as s:
        assert s.get_one(Job, job_id).state is JobState.FAILED  # nothing ran
    # The node's own page: same origin, with the token.
    own = {"X-CSRF-Token": csrf, "Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"}
    response = client.post(url, headers=own)
    assert response.status_code == 202, response.text
    with node.sessions() as s:
        assert s.get_one(Job, job_id).state is JobState.QUEUED


def test_sign_out_and_account_removal_end_the_session(node: Node) -> None:
    from node.auth.accounts import AccountStore

    client, csrf = node.signed_in(Role.VIEWER)
    assert client.post("/signout").status_code == 403  # CSRF applies to signing out too
    assert client.get("/api/jobs").status_code == 200
    response = client.post("/signout", headers={"X-CSRF-Token": csrf}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/signin")
    assert client.get("/api/jobs").status_code == 401

    client, _ = node.signed_in(Role.ADMIN)
    assert client.get("/api/jobs").status_code == 200
    assert AccountStore(node.sessions).remove("admin")
    assert client.get("/api/jobs").status_code == 401
    # A cookie signed with any other key is not a session, whatever it claims.
    viewer, _ = node.signed_in(Role.VIEWER)
    claims = {"n": "viewer", "r": "admin", "p": "local", "s": "3", "c": "x"}
    forged = node.as_role(None)
    forged.cookies.set(
        COOKIE,
        URLSafeTimedSerializer(
            "guessed", salt="ainode.session", signer_kwargs={"digest_method": hashlib.sha256}
        ).dumps(claims),
    )
    assert forged.get("/api/jobs").status_code == 401
    tampered = viewer.cookies[COOKIE][:-2] + (
        "AA" if not viewer.cookies[COOKIE].endswith("AA") else "BB"
    )
    forged.cookies.set(COOKIE, tampered)
    assert forged.get("/api/jobs").status_code == 401
    assert viewer.get("/api/jobs").status_code == 200


def test_foreign_host_is_refused(node: Node) -> None:
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost:8080.evil", "[::2]:80"):
        response = node.client.get("/api/studies", headers={"Host": host})
        assert response.status_code == 400, host
        assert response.text == "host not allowed"
        assert response.headers["x-frame-options"] == "DENY"
    for host in ("127.0.0.1:8080", "localhost", "LOCALHOST.:8080", "[::1]:8080"):
        assert node.client.get("/api/studies", headers={"Host": host}).status_code == 200, host
    # Probes may address the node by any name: /healthz tells nothing but up or down.
    assert node.client.get("/healthz", headers={"Host": "10.0.0.7:8080"}).status_code == 200


def test_configured_hosts_are_allowed(database_url: str, tmp_path) -> None:  # noqa: ANN001
    with served_node(database_url, tmp_path, web_allowed_hosts="node.hospital.example") as node:
        headers = {"Host": "node.hospital.example"}
        assert node.client.get("/api/jobs", headers=headers).status_code == 200
        assert node.client.get("/api/jobs", headers={"Host": "localhost"}).status_code == 400
        # The bind address is always one of the node's names.
        assert node.client.get("/api/jobs").status_code == 200


@pytest.mark.parametrize("path", ["/", "/api/jobs", "/healthz", "/static/app.js", "/signin"])
def test_security_headers_on_every_answer(node: Node, path: str) -> None:
    response = node.client.get(path)
    assert response.status_code == 200
    for name, value in SECURITY_HEADERS.items():
        if (path, name) == ("/signin", "referrer-policy"):
            value = "same-origin"  # so that its form posts with its real Origin
        assert response.headers[name] == value
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    if path.startswith("/api/"):
        assert response.headers["cache-control"] == "no-store"


def test_api_docs_for_admins_only(node: Node) -> None:
    anonymous = node.as_role(None)
    for page in ("/docs", "/redoc"):
        response = anonymous.get(page, follow_redirects=False)
        assert response.headers["location"] == f"/signin?next={page}"
    for role in (Role.VIEWER, Role.OPERATOR):
        client = node.as_role(role)
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
            assert client.get(path).status_code == 403, (role, path)
    admin = node.as_role(Role.ADMIN)
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        response = admin.get(page)
        assert response.status_code == 200 and f'src="/docs/assets/{asset}"' in response.text
        assert "http://" not in response.text and "https://" not in response.text  # no CDN
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert admin.get(f"/docs/assets/{asset}").status_code == 200
    assert admin.get("/docs/assets/favicon.png").status_code == 404  # only what the pages use
    schema = admin.get("/openapi.json").json()
    assert "/api/jobs/{job_id}/reanalyse" in schema["paths"]


def test_metrics_take_their_own_token_or_an_admin(database_url: str, tmp_path) -> None:  # noqa: ANN001
    scrape_token = "scrape-" + "s3cret" * 4
    with served_node(database_url, tmp_path, metrics_token=scrape_token) as node:
        anonymous = node.as_role(None)
        assert anonymous.get("/metrics").status_code == 401
        response = anonymous.get("/metrics", headers={"Authorization": f"Bearer {scrape_token}"})
        assert response.status_code == 200 and "ainode_jobs{" in response.text
        wrong = anonymous.get("/metrics", headers={"Authorization": "Bearer scrape-wrong"})
        assert wrong.status_code == 401
        assert node.as_role(Role.OPERATOR).get("/metrics").status_code == 403
        assert node.as_role(Role.ADMIN).get("/metrics").status_code == 200


def test_metrics_without_a_token_need_an_admin(node: Node) -> None:
    assert node.as_role(None).get("/metrics").status_code == 401
    assert node.as_role(Role.VIEWER).get("/metrics").status_code == 403
    client, _ = node.signed_in(Role.ADMIN)
    assert client.get("/metrics").status_code == 200
