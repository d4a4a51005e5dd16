"""The worklist in a real browser: Chromium against the app served by uvicorn on a free port
over a seeded SQLite database with a real overlay (``tests.worklist_seed``).

An operator sees the STAT study with an unacknowledged critical finding first, its
overlay's thumbnail loaded, filters the list, and acknowledges the finding: the row then
says who and when, and the database holds it. A viewer sees masked names and no button.
No page error, no Content Security Policy violation.

With ``AINODE_DOCS_SCREENSHOTS`` set to a folder, the operator's full-page screenshot is
also saved there as ``worklist.png`` (the one in ``docs/img`` is made so).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session, sessionmaker

from node.auth.accounts import AccountStore
from node.auth.roles import Role
from node.db.findings import CriticalFinding
from node.db.migrate import upgrade_to_head
from node.db.session import make_engine, make_session_factory
from node.settings import Settings
from node.web import create_app
from tests.browser import PASSWORD, POLLED, chromium_page, sign_in, uvicorn_thread
from tests.web_node import make_retry
from tests.worklist_seed import ORDER, Seeded, seed_worklist

MAX_SCREENSHOT_BYTES = 300_000


@dataclass
class Served:
    url: str
    sessions: sessionmaker[Session]
    seeded: Seeded


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path / "node", ae_title="AINODE_E2E")
    engine = make_engine(settings)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    seeded = seed_worklist(sessions, settings.results_dir, tmp_path / "ct")
    accounts = AccountStore(sessions)
    for role in Role:
        accounts.add(role.value, role, PASSWORD)
    app = create_app(
        settings, sessions, health=lambda: {"database": True}, retry_job=make_retry(sessions)
    )
    try:
        with uvicorn_thread(app) as url:
            yield Served(url, sessions, seeded)
    finally:
        engine.dispose()


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium_page() as opened:
        yield opened


def watch_for_errors(page: Page) -> list[str]:
    """Script errors and Content Security Policy violations, as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return errors


def test_operator_reads_the_worklist_and_acknowledges(
    served: Served, page: Page, tmp_path: Path
) -> None:
    errors = watch_for_errors(page)
    sign_in(page, served.url, "operator")
    rows = page.locator("#worklist tbody tr")
    expect(rows).to_have_count(len(ORDER), timeout=POLLED)
    # The worklist is the dashboard's first card, a table with its own caption.
    assert page.evaluate("document.querySelector('main > section').id") == "worklist-card"
    expect(page.locator("#worklist caption")).to_contain_text("unacknowledged critical")
    expect(page.locator("#worklist-count")).to_have_text(str(len(ORDER)))

    stat_uid = served.seeded.studies["ACC-STAT"]
    first = rows.nth(0)
    expect(first).to_have_attribute("data-study-uid", stat_uid)
    expect(first).to_have_class(re.compile(r"\bwl-stat\b.*\bwl-open-critical\b"))
    expect(first.locator(".wl-urgency .badge")).to_have_text("STAT")
    expect(first.locator(".wl-open")).to_have_text("1 critical unacknowledged")
    expect(first).to_contain_text("ROE, RICHARD")
    expect(first).to_contain_text("ACC-STAT")
    expect(first.locator(".wl-findings li")).to_have_text(
        ["Sphere lesion: 4.4 mL", "Nodule: present, probability 0.93 (threshold 0.50)"]
    )
    expect(first.locator(".wl-critical-text")).to_have_text(
        " Sphere lesion: 4.4 ml (critical at 1.0 ml)"
    )
    expect(rows.nth(1)).to_have_attribute("data-study-uid", served.seeded.studies["ACC-HIGHCRIT"])

    # The overlay's thumbnail loaded (decoded by the browser), with words for it.
    thumbnail = first.locator(".wl-thumb img")
    expect(thumbnail).to_have_attribute("alt", "Overlay of test-sphere-seg (AI result)")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    assert thumbnail.evaluate("img => img.naturalWidth") > 100

    # Filters: one modality, then all again.
    page.select_option("#worklist-modality", "MR")
    expect(rows).to_have_count(1, timeout=POLLED)
    expect(rows.nth(0)).to_contain_text("ACC-HIGH")
    page.select_option("#worklist-modality", "")
    expect(rows).to_have_count(len(ORDER), timeout=POLLED)

    screenshot = tmp_path / "worklist.png"
    page.screenshot(path=str(screenshot), full_page=True)
    keep_screenshot(screenshot)

    # Acknowledge, with a note: the row says who and when; the database holds it.
    finding_id = served.seeded.findings["stat"]
    stat_row = page.locator(f'#worklist tr[data-study-uid="{stat_uid}"]')
    stat_row.get_by_label(f"Note for critical finding {finding_id}").fill("phoned the ward")
    stat_row.get_by_role("button", name="Acknowledge").click()
    acknowledged = stat_row.locator(".wl-acknowledged")
    expect(acknowledged).to_contain_text("Acknowledged by operator (operator), ", timeout=POLLED)
    expect(acknowledged).to_contain_text("phoned the ward")
    expect(acknowledged.locator("span")).to_have_attribute(
        "title", re.compile(r"^\d{4}-\d\d-\d\dT")
    )
    expect(stat_row.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(stat_row).not_to_have_class(re.compile(r"\bwl-open-critical\b"))
    # No longer open: the other open critical finding leads, the STAT study after STAT2.
    expect(rows.nth(0)).to_have_attribute(
        "data-study-uid", served.seeded.studies["ACC-HIGHCRIT"], timeout=POLLED
    )
    with served.sessions() as session:
        finding = session.get_one(CriticalFinding, finding_id)
        assert (finding.acknowledged_by, finding.acknowledged_role) == ("operator", "operator")
        assert finding.acknowledgement_note == "phoned the ward"
        assert finding.acknowledged_at is not None
    assert errors == []


def test_viewer_sees_masked_names_and_no_button(served: Served, page: Page) -> None:
    errors = watch_for_errors(page)
    sign_in(page, served.url, "viewer")
    rows = page.locator("#worklist tbody tr")
    expect(rows).to_have_count(len(ORDER), timeout=POLLED)
    first = rows.nth(0)
    expect(first).to_have_attribute("data-study-uid", served.seeded.studies["ACC-STAT"])
    expect(first.locator(".hidden-id")).to_have_text("identifiers hidden")
    expect(page.locator("#worklist")).not_to_contain_text("ROE")
    expect(page.locator("#worklist")).not_to_contain_text("ACC-STAT")
    expect(page.locator("#worklist button.acknowledge")).to_have_count(0)
    expect(page.locator("#worklist .wl-note")).to_have_count(0)
    expect(first.locator(".wl-critical")).to_contain_text("not acknowledged yet")
    # What was found is the same for every role.
    expect(first.locator(".wl-findings li").first).to_have_text("Sphere lesion: 4.4 mL")
    assert errors == []


def keep_screenshot(path: Path) -> None:
    """Check the screenshot's size; copy it where ``AINODE_DOCS_SCREENSHOTS`` says, made
    smaller (256 colours) when it would pass :data:`MAX_SCREENSHOT_BYTES`."""
    image = Image.open(path)
    assert image.size[0] >= 1200 and image.size[1] >= 600
    buffer = io.BytesIO()
    image.convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < MAX_SCREENSHOT_BYTES
    folder = os.environ.get("AINODE_DOCS_SCREENSHOTS")
    if folder:
        (Path(folder) / "worklist.png").write_bytes(buffer.getvalue())
