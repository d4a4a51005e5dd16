"""Signing in to the dashboard in a real browser (Chromium), a role refused, and a form
posted from another site refused.

The node is the real app over a seeded SQLite database (``tests.browser``); the other
site is a second web server on another loopback port, so the browser treats it as
another origin of the same site (and sends the node's SameSite=Strict cookie with its
requests), or, addressed as ``localhost``, as another site altogether.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from node.db.models import Job, JobState
from tests.browser import (
    POLLED,
    ServedNode,
    chromium_page,
    other_site,
    served_dashboard,
    sign_in,
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedNode]:
    with served_dashboard(tmp_path) as node:
        yield node


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium_page() as opened:
        yield opened


def job_state(served: ServedNode, name: str) -> JobState:
    with served.sessions() as s:
        return s.get_one(Job, served.jobs[name]).state


def test_sign_in_through_the_form_and_out_again(served: ServedNode, page: Page) -> None:
    policy_violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            policy_violations.append(message.text)

    page.on("console", on_console)
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/signin?next=/")
    expect(page.locator("#signin-message")).to_be_hidden()

    page.fill("#signin-name", "operator")
    page.fill("#signin-password", "not the password")
    page.click("#signin-submit")
    expect(page.locator("#signin-message")).to_have_text("Wrong name or password.")
    expect(page.locator("#signin-name")).to_have_value("operator")

    page.fill("#signin-password", "correct horse battery staple")
    page.click("#signin-submit")
    expect(page).to_have_url(served.url + "/")
    expect(page.locator("#user-name")).to_have_text("operator")
    expect(page.locator("#user-role")).to_have_text("operator")
    expect(page.locator("#studies tbody tr")).to_have_count(2, timeout=POLLED)
    expect(page.locator("#studies tbody tr").nth(1)).to_contain_text("DOE, JANE")
    expect(page.locator("#studies tbody tr").nth(1)).to_contain_text("ACC1")

    page.click("#signout")
    expect(page).to_have_url(served.url + "/signin?next=/")
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/signin?next=/")  # the session is over
    assert policy_violations == []


def test_a_viewer_sees_no_identifiers_and_may_not_retry(served: ServedNode, page: Page) -> None:
    served.parts["broker"] = True  # a retry would go through, were the role allowed
    sign_in(page, served.url, "viewer")
    studies = page.locator("#studies tbody tr")
    expect(studies).to_have_count(2, timeout=POLLED)
    expect(studies.nth(1)).to_contain_text("identifiers hidden")
    expect(studies.nth(1)).not_to_contain_text("DOE")
    expect(studies.nth(1)).not_to_contain_text("ACC1")

    failed_row = page.locator(f'#jobs tr[data-job-id="{served.jobs["failed"]}"]')
    failed_row.get_by_role("button", name="Retry").click()
    expect(page.locator("#alert")).to_be_visible()
    expect(page.locator("#alert-text")).to_have_text(
        f"Retry of job #{served.jobs['failed']} refused: "
        "your role (viewer) may not do this; it needs operator"
    )
    expect(failed_row.get_by_role("button", name="Retry")).to_be_enabled()
    assert job_state(served, "failed") is JobState.FAILED


def test_a_form_posted_from_another_site_is_refused(served: ServedNode, page: Page) -> None:
    served.parts["broker"] = True  # the node would retry the job, were the request its own
    target = f"{served.url}/api/jobs/{served.jobs['failed']}/retry"

    def attack() -> str:
        # What a page elsewhere can do: post a form to the node, with no way to read
        # the session's CSRF token.
        return f"""<!doctype html><html><body>
<form method="post" action="{target}"><input name="reason" value="pwned"></form>
<script>document.forms[0].submit();</script>
</body></html>"""

    sign_in(page, served.url, "operator")
    with other_site(attack) as port:
        # Another origin of the same site: the browser sends the session cookie along.
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page).to_have_url(target)
        expect(page.locator("body")).to_contain_text(
            "cross-site request refused (Sec-Fetch-Site: same-site)"
        )
        assert job_state(served, "failed") is JobState.FAILED
        # Another site altogether: SameSite=Strict keeps the cookie home.
        page.goto(f"http://localhost:{port}/")
        expect(page).to_have_url(target)
        expect(page.locator("body")).to_contain_text("sign in")
        assert job_state(served, "failed") is JobState.FAILED

    # The same operator, on the node's own page, may retry it.
    page.goto(served.url + "/")
    failed_row = page.locator(f'#jobs tr[data-job-id="{served.jobs["failed"]}"]')
    failed_row.get_by_role("button", name="Retry").click()
    expect(failed_row.locator(".badge")).to_have_text("queued", timeout=POLLED)
    assert job_state(served, "failed") is JobState.QUEUED


def test_an_admin_tries_the_api_from_its_docs(served: ServedNode, page: Page) -> None:
    served.parts["broker"] = True
    sign_in(page, served.url, "admin")
    page.goto(served.url + "/docs")
    retry = page.locator("#operations-jobs-retry_job_api_jobs__job_id__retry_post")
    retry.locator(".opblock-summary").click()  # Swagger UI, served by the node, rendered
    retry.locator(".try-out__btn").click()
    retry.locator("input[placeholder=job_id]").fill(str(served.jobs["failed"]))
    retry.locator(".execute").click()
    # Its requests carry the session's CSRF token (/static/apidocs.js): accepted.
    expect(retry.locator(".live-responses-table tbody .response-col_status")).to_have_text("202")
    assert job_state(served, "failed") is JobState.QUEUED
