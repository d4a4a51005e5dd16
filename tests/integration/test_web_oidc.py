"""Sign-in through an OpenID Connect provider, against a real one (oidc-provider on Node.js,
``tests.oidc_provider``): the code flow walked as a browser would, the node's app over a
seeded SQLite database (``tests.web_node``).

The node talks to the provider for real (discovery, token endpoint, JWKS, userinfo),
over http, or https with the hospital's CA. The provider's accounts (provider.js):
alice is in radiology and radiology-admins, oscar in radiology-ops, bob in radiology,
carol in cardiology, which the node's role map does not name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient

from node.auth.roles import Role
from node.auth.sessions import COOKIE
from tests.oidc_provider import SCOPES, OidcProvider, cancel, log_in, oidc_provider
from tests.pki import make_pki
from tests.web_node import BASE_URL, Node, served_node

CALLBACK = f"{BASE_URL}/signin/oidc/callback"  # the node's, as the browser addresses it
TRANSACTION_COOKIE = "ainode_oidc"
MASKED = "***"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with oidc_provider(tmp_path_factory.mktemp("oidc"), CALLBACK) as running:
        yield running


def _sqlite(directory: Path) -> str:
    return f"sqlite:///{directory / 'ainode.db'}"


@pytest.fixture
def node(provider: OidcProvider, tmp_path: Path) -> Iterator[Node]:
    """The node's app with sign-in through ``provider``."""
    with served_node(_sqlite(tmp_path), tmp_path, **provider.node_settings()) as served:
        yield served


def browser(node: Node) -> TestClient:
    """A browser at the node: no credentials, its own cookies."""
    return TestClient(node.app, base_url=BASE_URL)


def begin(client: TestClient, next_path: str = "/") -> str:
    """Click "Sign in with ...": the provider's authorization URL the node sends us to."""
    response = client.get("/signin/oidc", params={"next": next_path}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert TRANSACTION_COOKIE in client.cookies
    return response.headers["location"]


def sign_in(node: Node, provider: OidcProvider, login: str, next_path: str = "/") -> TestClient:
    """A browser signed in as ``login`` through the provider (asserted)."""
    client = browser(node)
    back = log_in(provider, begin(client, next_path), login)
    response = client.get(back, follow_redirects=False)
    assert response.status_code == 200, response.text
    return client


def test_an_admin_claim_makes_an_admin_session(node: Node, provider: OidcProvider) -> None:
    client = browser(node)
    url = begin(client, "/docs")
    authorization = urlsplit(url)
    query = dict(parse_qsl(authorization.query))
    assert f"{authorization.scheme}://{authorization.netloc}" == provider.issuer
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == CALLBACK
    assert query["state"] and query["nonce"] and query["scope"] == SCOPES

    back = log_in(provider, url, "alice")
    assert back.startswith(CALLBACK + "?")
    response = client.get(back, follow_redirects=False)
    assert response.status_code == 200
    # A same-site page goes on to /docs: the Strict session cookie goes along with it.
    assert '<meta http-equiv="refresh" content="0;url=/docs">' in response.text
    assert COOKIE in client.cookies and TRANSACTION_COOKIE not in client.cookies
    me = client.get("/api/session").json()
    assert {k: me[k] for k in ("name", "role", "provider", "via", "sees_identifiers")} == {
        "name": "alice",
        "role": "admin",
        "provider": f"oidc:{provider.issuer}",
        "via": "session",
        "sees_identifiers": True,
    }
    assert client.get("/docs").status_code == 200  # admins only

    record = node.actions[-1]
    assert (record.action, record.actor, record.actor_role, record.succeeded) == (
        "sign_in",
        "alice",
        "admin",
        True,
    )
    assert record.provider == f"oidc:{provider.issuer}" and record.peer

    # Signing out is the same as for a local session, and recorded with the provider.
    signed_out = client.post(
        "/signout", headers={"X-CSRF-Token": me["csrf_token"]}, follow_redirects=False
    )
    assert signed_out.status_code == 303
    assert node.actions[-1].action == "sign_out"
    assert node.actions[-1].provider == f"oidc:{provider.issuer}"
    assert client.get("/api/session").status_code == 401


@pytest.mark.parametrize(
    ("login", "role", "docs"), [("oscar", Role.OPERATOR, 403), ("bob", Role.VIEWER, 403)]
)
def test_group_claims_map_to_roles(
    node: Node, provider: OidcProvider, login: str, role: Role, docs: int
) -> None:
    client = sign_in(node, provider, login)
    me = client.get("/api/session").json()
    assert (me["name"], me["role"]) == (login, role.value)
    assert client.get("/docs").status_code == docs
    assert node.actions[-1].actor_role == role.value


def test_a_viewer_sees_identifiers_masked(node: Node, provider: OidcProvider) -> None:
    client = sign_in(node, provider, "bob")
    studies = client.get("/api/studies").json()
    assert [s["patient"]["name"] for s in studies] == [MASKED, MASKED]
    assert [s["accession_number"] for s in studies] == [MASKED, MASKED]
    assert all(s["identifiers_hidden"] for s in studies)
    assert client.post("/api/jobs/1/retry").status_code == 403  # no CSRF token, no role


def test_no_role_for_the_claim_is_refused(node: Node, provider: OidcProvider) -> None:
    client = browser(node)
    response = client.get(log_in(provider, begin(client), "carol"), follow_redirects=False)
    assert response.status_code == 403
    assert "no role for you on this node" in response.text
    assert COOKIE not in client.cookies
    assert client.get("/api/session").status_code == 401
    record = node.actions[-1]
    assert (record.action, record.actor, record.actor_role, record.succeeded) == (
        "sign_in",
        "carol",
        "",
        False,
    )
    assert "no role for you on this node" in record.reason
    assert record.provider == f"oidc:{provider.issuer}"


@pytest.mark.parametrize("forge", [lambda state: state[:-4] + "AAAA", lambda _: "état"])
def test_a_tampered_state_is_refused(
    node: Node, provider: OidcProvider, forge: Callable[[str], str]
) -> None:
    client = browser(node)
    back = urlsplit(log_in(provider, begin(client), "alice"))
    params = dict(parse_qsl(back.query))
    tampered = back._replace(query=urlencode({**params, "state": forge(params["state"])}))
    response = client.get(tampered.geturl(), follow_redirects=False)
    assert response.status_code == 403
    assert "state does not match" in response.text
    assert COOKIE not in client.cookies
    assert not node.actions[-1].succeeded
    assert "state does not match" in node.actions[-1].reason


def test_a_replayed_callback_is_refused(node: Node, provider: OidcProvider) -> None:
    client = browser(node)
    back = log_in(provider, begin(client), "alice")
    transaction = client.cookies[TRANSACTION_COOKIE]
    assert client.get(back, follow_redirects=False).status_code == 200

    # The same browser again: its transaction is over.
    again = client.get(back, follow_redirects=False)
    assert again.status_code == 403 and "no sign-in was in progress" in again.text
    # Someone who copied the callback and the transaction cookie: refused all the same.
    thief = browser(node)
    thief.cookies.set(TRANSACTION_COOKIE, transaction, domain="127.0.0.1", path="/signin/oidc")
    stolen = thief.get(back, follow_redirects=False)
    assert stolen.status_code == 403 and "already used" in stolen.text
    assert COOKIE not in thief.cookies
    assert [a.succeeded for a in node.actions[-3:]] == [True, False, False]


def test_a_callback_without_its_transaction_is_refused(node: Node, provider: OidcProvider) -> None:
    # A callback URL made for someone else's browser (a login CSRF): no transaction here.
    starter = browser(node)
    back = log_in(provider, begin(starter), "alice")
    victim = browser(node)
    response = victim.get(back, follow_redirects=False)
    assert response.status_code == 403
    assert COOKIE not in victim.cookies


def test_cancelled_at_the_provider(node: Node, provider: OidcProvider) -> None:
    client = browser(node)
    response = client.get(cancel(provider, begin(client)), follow_redirects=False)
    assert response.status_code == 403
    assert "the identity provider refused the sign-in" in response.text
    assert COOKIE not in client.cookies


def test_the_sign_in_page_offers_the_provider(node: Node, provider: OidcProvider) -> None:
    page = browser(node).get("/signin?next=/docs").text
    host = urlsplit(provider.issuer).hostname
    assert f">Sign in with {host}</a>" in page
    assert 'href="/signin/oidc?next=%2Fdocs"' in page


def test_without_an_issuer_oidc_is_off(tmp_path: Path) -> None:
    with served_node(_sqlite(tmp_path), tmp_path) as node:
        client = browser(node)
        assert "signin-oidc" not in client.get("/signin").text
        assert client.get("/signin/oidc", follow_redirects=False).status_code == 404
        assert client.get("/signin/oidc/callback", follow_redirects=False).status_code == 404


def test_over_tls_with_the_hospital_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with oidc_provider(tmp_path / "oidc", CALLBACK, tls=pki) as provider:
        assert provider.issuer.startswith("https://localhost:")
        settings = provider.node_settings()
        with served_node(_sqlite(tmp_path), tmp_path, **settings) as node:
            client = sign_in(node, provider, "alice")
            assert client.get("/api/session").json()["role"] == "admin"
        # Without the hospital's CA (the system's CAs), or with another one: refused.
        for ca in (None, pki.other_ca):
            data_dir = tmp_path / f"ca-{ca.name if ca else 'system'}"
            data_dir.mkdir()
            with served_node(_sqlite(data_dir), data_dir, **{**settings, "oidc_ca": ca}) as node:
                response = browser(node).get("/signin/oidc", follow_redirects=False)
                assert response.status_code == 502
                assert "the identity provider did not answer" in response.text
                assert "CERTIFICATE_VERIFY_FAILED" in response.text
