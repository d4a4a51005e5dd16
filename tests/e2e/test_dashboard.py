"""The dashboard in a real browser: Chromium against the app served by uvicorn on a free port.

The page must show the rows of a SQLite database, escape DICOM text, report which part
of the node is down, and retry a failed job (refused while the broker is down, then
accepted) so that the row in the database changes. An operator signs in first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from node.db.models import Job, JobState
from tests.browser import (
    HOSTILE,
    POLLED,
    ServedNode,
    chromium_page,
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


def test_dashboard_shows_rows_health_and_retries(
    served: ServedNode, page: Page, tmp_path: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    sign_in(page, served.url, "operator")
    studies = page.locator("#studies tbody tr")
    jobs = page.locator("#jobs tbody tr")
    expect(studies).to_have_count(2, timeout=POLLED)
    expect(jobs).to_have_count(3, timeout=POLLED)

    # Newest study first; DICOM text shown as text, never as markup.
    head = studies.nth(0)
    expect(head).to_have_attribute("data-study-uid", "1.2.826.0.9.2")
    expect(head).to_contain_text("ROE, RICHARD J")
    expect(head).to_contain_text("2024-02-10")
    expect(head).to_contain_text("ACC2")
    expect(head).to_contain_text(HOSTILE)
    expect(page.locator("#studies img")).to_have_count(0)
    chest = studies.nth(1)
    expect(chest).to_contain_text("DOE, JANE")
    expect(chest.locator(".series").nth(0)).to_contain_text("Dose report")
    expect(chest.locator(".series").nth(0)).to_contain_text("no model accepts modality SR")
    expect(chest.locator(".series").nth(0).locator(".badge")).to_have_text("no model")
    expect(chest.locator(".series").nth(1).locator(".badge")).to_have_text("routed")
    expect(page.locator("#node-ident")).to_contain_text("AINODE_E2E")

    # Jobs newest first: the failed one with its error, steps and Retry button.
    failed_row = page.locator(f'#jobs tr[data-job-id="{served.jobs["failed"]}"]')
    expect(jobs.nth(0)).to_have_attribute("data-job-id", str(served.jobs["failed"]))
    expect(failed_row.locator(".badge")).to_have_text("failed")
    expect(failed_row.locator(".col-error")).to_have_text("CUDA out of memory")
    expect(failed_row.locator(".step")).to_have_text(["load0.80 s", "infer4.00 s"])
    done_row = page.locator(f'#jobs tr[data-job-id="{served.jobs["done"]}"]')
    expect(done_row.locator(".badge")).to_have_text("succeeded")
    expect(done_row.locator(".result-delivered")).to_have_text("SEG ✓")
    expect(done_row.locator(".result-delivered")).to_have_attribute(
        "title", re.compile(r"pacs: delivered")
    )
    expect(done_row.get_by_role("button", name="Retry")).to_have_count(0)
    # A dead-lettered delivery: marked, explained as text (never markup), retryable.
    dead_row = page.locator(f'#jobs tr[data-job-id="{served.jobs["undelivered"]}"]')
    expect(dead_row.locator(".result-dead")).to_have_text("SR ✗")
    expect(dead_row).to_contain_text(
        "SR → viewer: dead-lettered after 8 attempts: HTTP 503 <b>busy</b>"
    )
    expect(dead_row.get_by_role("button", name="Retry")).to_have_count(1)

    # The banner names the part that is down.
    expect(page.locator("#health-summary")).to_have_text("Degraded: Broker down")
    expect(page.locator('#health-parts [data-part="broker"]')).to_have_class("pill down")
    expect(page.locator('#health-parts [data-part="scp"]')).to_have_class("pill ok")
    page.screenshot(path=str(tmp_path / "dashboard-degraded.png"), full_page=True)

    # Refused while the broker is down: the reason is shown and the job is unchanged.
    failed_row.get_by_role("button", name="Retry").click()
    expect(page.locator("#alert")).to_be_visible()
    expect(page.locator("#alert-text")).to_contain_text("broker unreachable")
    expect(failed_row.get_by_role("button", name="Retry")).to_be_enabled()
    with served.sessions() as s:
        job = s.get(Job, served.jobs["failed"])
        assert job is not None
        assert job.state == JobState.FAILED

    # Broker back: the banner clears and the retry goes through.
    served.parts["broker"] = True
    expect(page.locator("#health-summary")).to_have_text("All systems operational", timeout=POLLED)
    failed_row.get_by_role("button", name="Retry").click()
    expect(failed_row.locator(".badge")).to_have_text("queued", timeout=POLLED)
    expect(failed_row.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.locator("#alert")).to_be_hidden()
    with served.sessions() as s:
        job = s.get(Job, served.jobs["failed"])
        assert job is not None
        assert (job.state, job.error) == (JobState.QUEUED, "")

    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    assert errors == [] and dialogs == []
