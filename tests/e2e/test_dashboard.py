"""The dashboard in a real browser: Chromium against the app served by uvicorn on a free port.

The page must show the rows of a SQLite database, escape DICOM text, report which part
of the node is down, and retry a failed job (refused while the broker is down, then
accepted) so that the row in the database changes.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from node.db.models import (
    Base,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    JobStep,
    Patient,
    ResultObject,
    Series,
    SeriesState,
    StepState,
    Study,
)
from node.db.session import database_answers, make_engine, make_session_factory, transaction
from node.settings import Settings
from node.web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
HOSTILE = "<img src=x onerror=alert(1)>"
POLLED = 15_000  # ms to wait for what the page shows on a later poll (it polls every 2 s)


def seed(sessions: sessionmaker[Session]) -> dict[str, int]:
    """A finished chest CT, a head CT whose model failed, and an SR no model accepts."""
    with transaction(sessions) as s:
        chest = Study(
            study_instance_uid="1.2.826.0.9.1",
            patient=Patient(patient_id="PID001", patient_name="DOE^JANE"),
            study_date="20240105",
            accession_number="ACC1",
            study_description="CT CHEST W/O CONTRAST",
            first_received_at=T0,
        )
        head = Study(
            study_instance_uid="1.2.826.0.9.2",
            patient=Patient(patient_id="PID002", patient_name="ROE^RICHARD^J"),
            study_date="20240210",
            accession_number="ACC2",
            study_description=HOSTILE,
            first_received_at=T0 + timedelta(minutes=30),
        )
        lung = Series(
            series_instance_uid="1.2.826.0.9.1.1",
            study=chest,
            modality="CT",
            series_description="Lung 1mm",
            series_number=2,
            state=SeriesState.ROUTED,
            completed_at=T0 + timedelta(minutes=1),
        )
        dose = Series(
            series_instance_uid="1.2.826.0.9.1.2",
            study=chest,
            modality="SR",
            series_description="Dose report",
            series_number=1,
            state=SeriesState.NO_MODEL,
            state_reason="no model accepts modality SR",
            completed_at=T0 + timedelta(minutes=1),
        )
        brain = Series(
            series_instance_uid="1.2.826.0.9.2.1",
            study=head,
            modality="CT",
            series_description="Head axial 5mm",
            series_number=1,
            state=SeriesState.ROUTED,
            completed_at=T0 + timedelta(minutes=31),
        )
        s.add_all([chest, head, lung, dose, brain])
        for series, count in ((lung, 3), (dose, 1), (brain, 2)):
            for n in range(count):
                s.add(
                    Instance(
                        sop_instance_uid=f"{series.series_instance_uid}.{n + 1}",
                        series=series,
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        path=f"{n}.dcm",
                        size_bytes=1000,
                    )
                )
        done = Job(
            series=lung,
            model_name="lung-nodules",
            model_version="1.0",
            state=JobState.SUCCEEDED,
            attempts=1,
            created_at=T0 + timedelta(minutes=2),
            findings={"nodules": 2},
        )
        failed = Job(
            series=brain,
            model_name="bleed",
            model_version="2.1",
            state=JobState.FAILED,
            error="CUDA out of memory",
            attempts=1,
            created_at=T0 + timedelta(minutes=32),
        )
        undelivered = Job(
            series=lung,
            model_name="lung-nodule-classifier",
            model_version="1.0",
            state=JobState.FAILED,
            error="delivery dead-lettered: 1 object(s) to viewer after 8 attempt(s)",
            attempts=1,
            created_at=T0 + timedelta(minutes=1),
        )
        s.add_all([done, failed, undelivered])
        s.flush()
        for job, name, state, seconds, detail in [
            (done, "load", StepState.DONE, 0.42, ""),
            (done, "infer", StepState.DONE, 2.5, ""),
            (done, "encode", StepState.DONE, 0.3, ""),
            (done, "deliver", StepState.DONE, 1.1, ""),
            (failed, "load", StepState.DONE, 0.8, ""),
            (failed, "infer", StepState.FAILED, 4.0, "CUDA out of memory"),
        ]:
            s.add(JobStep(job=job, name=name, state=state, seconds=seconds, detail=detail))
        s.add(
            ResultObject(
                job=done,
                kind="SEG",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                sop_instance_uid="2.25.77",
                path="seg.dcm",
                deliveries=[
                    Delivery(
                        destination="pacs",
                        state=DeliveryState.DELIVERED,
                        attempts=1,
                        delivered_at=T0 + timedelta(minutes=3),
                    )
                ],
            )
        )
        s.add(
            ResultObject(
                job=undelivered,
                kind="SR",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                sop_instance_uid="2.25.78",
                path="sr.dcm",
                deliveries=[
                    Delivery(
                        destination="viewer",
                        state=DeliveryState.DEAD,
                        attempts=8,
                        last_error="HTTP 503 <b>busy</b>",
                    )
                ],
            )
        )
        s.flush()
        return {"done": done.id, "failed": failed.id, "undelivered": undelivered.id}


@dataclass
class ServedNode:
    url: str
    sessions: sessionmaker[Session]
    parts: dict[str, bool]
    jobs: dict[str, int]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedNode]:
    settings = Settings(data_dir=tmp_path, ae_title="AINODE_E2E")
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    jobs = seed(sessions)
    parts = {"scp": True, "broker": False}

    def health() -> dict[str, bool]:
        return {
            "scp": parts["scp"],
            "database": database_answers(engine),
            "broker": parts["broker"],
        }

    def retry(job_id: int) -> None:
        # Like the node's queue: nothing can be re-sent while the broker is down.
        if not parts["broker"]:
            raise ValueError("broker unreachable; job left as it was")
        with transaction(sessions) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise LookupError(job_id)
            if job.state != JobState.FAILED:
                raise ValueError(f"job {job_id} is {job.state.value}")
            job.state = JobState.QUEUED
            job.error = ""

    app = create_app(settings, sessions, health=health, retry_job=retry)
    # Bound and listening before the server starts: no port race, no start-up wait.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield ServedNode(f"http://127.0.0.1:{port}", sessions, parts, jobs)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        engine.dispose()


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


def test_dashboard_shows_rows_health_and_retries(
    served: ServedNode, page: Page, tmp_path: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(served.url + "/")
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
