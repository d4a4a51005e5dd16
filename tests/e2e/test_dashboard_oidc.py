"""Signing in to the dashboard through the hospital's OpenID Connect provider, in a real
browser (Chromium): the node's button, the provider's own login page, and back.

The provider is oidc-provider on Node.js (``tests.oidc_provider``), addressed as
``localhost``; the node is the real app served by uvicorn over a seeded SQLite database
(``tests.browser``), addressed as ``127.0.0.1``: two sites, as a hospital's provider
and the node are, so the browser applies its cross-site cookie rules on the way back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from node.auth.actions import ActionRecord
from node.db.models import Base
from node.db.session import make_engine, make_session_factory
from node.settings import Settings
from node.web import create_app
from tests.browser import POLLED, chromium_page, seed, uvicorn_thread
from tests.oidc_provider import OidcProvider, bound_socket, node_settings, oidc_provider

LOOPBACK = frozenset({"127.0.0.1", "localhost"})


@dataclass
class SignInNode:
    url: str
    provider: OidcProvider
    actions: list[ActionRecord]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[SignInNode]:
    # The provider's socket first: the node must know the issuer, and the provider the
    # node's callback.
    listening = bound_socket()
    issuer = f"http://localhost:{listening.getsockname()[1]}"
    settings = Settings(data_dir=tmp_path, ae_title="AINODE_E2E", **node_settings(issuer))
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    seed(sessions)
    actions: list[ActionRecord] = []

    def retry(*_args: object) -> None:
        raise ValueError("no broker in this test")

    app = create_app(
        settings,
        sessions,
        health=lambda: {"scp": True, "database": True, "broker": True},
        retry_job=retry,
        record_action=actions.append,
    )
    try:
        with uvicorn_thread(app) as url:
            callback = url + "/signin/oidc/callback"
            with oidc_provider(tmp_path / "oidc", callback, listening=listening) as provider:
                assert provider.issuer == issuer
                yield SignInNode(url, provider, actions)
    finally:
        listening.close()  # the provider's copy is its own; ours, unless it never started
        engine.dispose()


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium_page() as opened:
        # The provider's development login page asks for a web font elsewhere: nothing
        # leaves the machine.
        opened.route(lambda url: urlsplit(url).hostname not in LOOPBACK, lambda r: r.abort())
        yield opened


def at_provider_login(page: Page, served: SignInNode, login: str) -> None:
    """From the node's sign-in page, through the provider's login form, as ``login``."""
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/signin?next=/")
    page.get_by_role("link", name="Sign in with localhost").click()
    expect(page).to_have_url(re.compile(re.escape(served.provider.issuer) + "/interaction/"))
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password")
    page.get_by_role("button", name="Sign-in").click()


def test_sign_in_through_the_provider(served: SignInNode, page: Page) -> None:
    policy_violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            policy_violations.append(message.text)

    page.on("console", on_console)
    at_provider_login(page, served, "alice")
    expect(page).to_have_url(served.url + "/")
    expect(page.locator("#user-name")).to_have_text("alice")
    expect(page.locator("#user-role")).to_have_text("admin")
    expect(page.locator("#studies tbody tr")).to_have_count(2, timeout=POLLED)
    expect(page.locator("#studies tbody tr").nth(1)).to_contain_text("DOE, JANE")
    record = served.actions[-1]
    assert (record.action, record.actor, record.actor_role, record.succeeded) == (
        "sign_in",
        "alice",
        "admin",
        True,
    )
    assert record.provider == f"oidc:{served.provider.issuer}"

    page.click("#signout")
    expect(page).to_have_url(served.url + "/signin?next=/")
    assert policy_violations == []


def test_a_viewer_signs_in_and_sees_no_identifiers(served: SignInNode, page: Page) -> None:
    at_provider_login(page, served, "bob")
    expect(page).to_have_url(served.url + "/")
    expect(page.locator("#user-role")).to_have_text("viewer")
    studies = page.locator("#studies tbody tr")
    expect(studies).to_have_count(2, timeout=POLLED)
    expect(studies.nth(1)).to_contain_text("identifiers hidden")
    expect(studies.nth(1)).not_to_contain_text("DOE")


def test_no_role_on_this_node_is_refused(served: SignInNode, page: Page) -> None:
    at_provider_login(page, served, "carol")
    expect(page).to_have_url(re.compile(re.escape(served.url) + "/signin/oidc/callback"))
    expect(page.locator("#signin-message")).to_contain_text("no role for you on this node")
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/signin?next=/")  # no session
    assert not served.actions[-1].succeeded and served.actions[-1].actor == "carol"
