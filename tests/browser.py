"""A real browser against the dashboard: the app served by uvicorn on a free port over a
seeded SQLite database, headless Chromium driven by Playwright, and a page of "another
site" served on another port (for cross-site requests).

Every role has an account (its name is the role's, the password ``PASSWORD``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from node.auth.accounts import AccountStore
from node.auth.principal import Principal
from node.auth.roles import Role
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
PASSWORD = "correct horse battery staple"


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


def _listening_socket() -> socket.socket:
    # Bound and listening before the server starts: no port race, no start-up wait.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextmanager
def uvicorn_thread(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; its base URL."""
    sock = _listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def served_dashboard(data_dir: Path) -> Iterator[ServedNode]:
    """The node's app over a seeded database; the broker starts down (retries refused)."""
    settings = Settings(data_dir=data_dir, ae_title="AINODE_E2E")
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    jobs = seed(sessions)
    accounts = AccountStore(sessions)
    for role in Role:
        accounts.add(role.value, role, PASSWORD)
    parts = {"scp": True, "broker": False}

    def health() -> dict[str, bool]:
        return {
            "scp": parts["scp"],
            "database": database_answers(engine),
            "broker": parts["broker"],
        }

    def retry(job_id: int, _principal: Principal, _reason: str) -> None:
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
    try:
        with uvicorn_thread(app) as url:
            yield ServedNode(url, sessions, parts, jobs)
    finally:
        engine.dispose()


@contextmanager
def chromium_page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


def sign_in(page: Page, url: str, name: str, password: str = PASSWORD) -> None:
    """Open the dashboard, be sent to the sign-in form, fill it in, land on the dashboard."""
    page.goto(url + "/")
    expect(page).to_have_url(url + "/signin?next=/")
    page.fill("#signin-name", name)
    page.fill("#signin-password", password)
    page.click("#signin-submit")
    expect(page).to_have_url(url + "/")
    expect(page.locator("#user-name")).to_have_text(name)


@contextmanager
def other_site(page_html: Callable[[], str]) -> Iterator[int]:
    """A web server of "another site" on a free loopback port answering every GET with
    ``page_html()``; its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
            body = page_html().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
