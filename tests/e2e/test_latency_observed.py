"""Latency as an operator sees it, on a real node: ``ainode serve`` with a real Orthanc as
its archive analyses a phantom CT sent by DCMTK's storescu. Then ``/metrics`` holds one
observation of ``ainode_result_latency_seconds`` per model for that archive, agreeing
with the study's timeline, and in Chromium a click on the study opens its timeline:
received, complete, queued, each stage, stored and delivered, drawn as a bar. The
screenshot is kept under the test's tmp dir (``timeline.png``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from pydicom import dcmread

from tests.browser import POLLED, chromium_page, sign_in
from tests.factories import phantom_study
from tests.node_process import NodeProcess, node_environment, wait_for
from tests.orthanc import Orthanc, start_orthanc
from tests.web_node import metric_samples

pytestmark = pytest.mark.e2e

MODELS = ("ct-lung-nodule-seg", "ct-nodule-classifier")
VIEWER = "watcher"
PASSWORD = "correct horse battery staple"


@dataclass
class Delivered:
    node: NodeProcess
    study_uid: str
    seconds_sending_to_settled: float  # storescu's start to every job settled
    directory: Path


def _add_viewer(env: dict[str, str]) -> None:
    added = subprocess.run(
        [sys.executable, "-m", "node.cli", "users", "add", VIEWER, "--role", "viewer"],
        env={**env, "AINODE_LOG_LEVEL": "WARNING"}, input=PASSWORD + "\n",
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def _jobs_succeeded(node: NodeProcess) -> list[dict] | None:
    jobs: list[dict] = node.get("/api/jobs")  # type: ignore[assignment]
    settled = len(jobs) == len(MODELS) and all(j["state"] in ("succeeded", "failed") for j in jobs)
    return jobs if settled else None


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivered]:
    root = tmp_path_factory.mktemp("latency")
    files = phantom_study(root, 1010, slices=16)
    archive = start_orthanc(root / "archive")
    env, dicom_port, http_port = node_environment(root / "node", archive=archive.destination)
    node = NodeProcess(root / "node", dicom_port, http_port, env)
    try:
        node.start()
        _add_viewer(env)
        began = time.monotonic()
        Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")
        try:
            jobs = wait_for(lambda: _jobs_succeeded(node), timeout=240, what="both jobs settled")
        except AssertionError:
            print(node.log())
            raise
        assert {j["state"] for j in jobs} == {"succeeded"}, [j["error"] for j in jobs]
        study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        yield Delivered(node, study_uid, time.monotonic() - began, root)
    finally:
        node.stop()
        archive.stop()


def test_the_histogram_counts_each_model_once_and_agrees_with_the_timeline(
    delivered: Delivered,
) -> None:
    node = delivered.node
    timeline: dict = node.get(f"/api/studies/{delivered.study_uid}/timeline")  # type: ignore[assignment]
    (series,) = timeline["series"]
    latency = {job["model_name"]: job["latency_seconds"] for job in series["jobs"]}
    samples = metric_samples(
        httpx.get(node.url + "/metrics", headers=node.headers, timeout=30).text
    )
    for model in MODELS:
        labels = (("destination", "archive"), ("model", model))
        count = samples[("ainode_result_latency_seconds_count", labels)]
        total = samples[("ainode_result_latency_seconds_sum", labels)]
        bucket = tuple(sorted((*labels, ("le", "+Inf"))))
        inf = samples[("ainode_result_latency_seconds_bucket", bucket)]
        print(f"{model}: last instance -> stored in the archive {total:.2f} s")
        assert count == inf == 1
        # Measured from the last instance, so within the time from sending to settled.
        assert 0 < total < delivered.seconds_sending_to_settled
        assert total == pytest.approx(latency[model]["archive"], abs=1e-6)


def test_a_click_on_the_study_shows_its_timeline(delivered: Delivered) -> None:
    screenshot = delivered.directory / "timeline.png"
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        sign_in(page, delivered.node.url, VIEWER, PASSWORD)
        row = page.locator(f'#studies tr[data-study-uid="{delivered.study_uid}"]')
        expect(row).to_be_visible(timeout=POLLED)
        expect(page.locator("#timeline-card")).to_be_hidden()
        row.click()

        card = page.locator("#timeline-card")
        expect(card).to_be_visible()
        expect(row).to_have_class(re.compile(r"\bselected\b"))
        series = card.locator(".tl-series")
        expect(series).to_have_count(1, timeout=POLLED)
        series_kinds = series.locator(":scope > .tl-events > li")
        expect(series_kinds).to_have_count(3)
        assert [series_kinds.nth(i).get_attribute("data-kind") for i in range(3)] == [
            "received_first", "received_last", "complete",
        ]  # fmt: skip
        jobs = card.locator(".tl-job")
        expect(jobs).to_have_count(len(MODELS))
        for n in range(len(MODELS)):
            job = jobs.nth(n)
            kinds = job.locator(".tl-event").evaluate_all("items => items.map(i => i.dataset.kind)")
            assert kinds[0] == "queued" and kinds[-1] == "finished", kinds
            first_stored = kinds.index("stored")
            assert set(kinds[1:first_stored]) == {"step"}, kinds
            assert "delivered" in kinds[first_stored:], kinds
            steps = job.locator(".tl-event.tl-step .tl-label").all_inner_texts()
            assert steps[0] == "load" and "infer" in steps and "encode" in steps, steps
            stages = job.locator(".tl-seg").evaluate_all("s => s.map(x => x.dataset.stage)")
            assert stages[:3] == ["complete", "queued", "load"], stages
            assert stages[-1] == "deliver" and "infer" in stages, stages
            expect(job.locator(".tl-latency")).to_contain_text("archive")
        page.screenshot(path=str(screenshot), full_page=True)

        page.locator("#timeline-close").click()
        expect(card).to_be_hidden()
        expect(row).not_to_have_class(re.compile(r"\bselected\b"))
        assert errors == []
    assert screenshot.stat().st_size > 10_000
    print(f"timeline screenshot: {screenshot}")
