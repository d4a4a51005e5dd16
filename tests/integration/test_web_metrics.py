"""``GET /metrics`` over a real database (SQLite, then PostgreSQL): counted at scrape time,
one registry per app. Read here with an admin's API token (who else may: test_web_auth)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from node.auth.roles import Role
from node.db.models import JobState, SeriesState
from node.settings import Settings
from node.web import create_app
from tests.web_node import BASE_URL, Node, job_id_of, make_retry, metric_samples


def test_metrics_count_the_database(node: Node) -> None:
    admin = node.as_role(Role.ADMIN)
    response = admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("ainode_up") == 1
    assert value("ainode_database_up") == 1
    assert value("ainode_instances_total") == 6
    assert {s.value: value("ainode_series", state=s.value) for s in SeriesState} == {
        "receiving": 1,
        "routed": 2,
        "no_model": 1,
    }
    assert {s.value: value("ainode_jobs", state=s.value) for s in JobState} == {
        "queued": 0,
        "running": 1,
        "delivering": 1,
        "succeeded": 1,
        "failed": 1,
    }
    assert value("ainode_results", kind="SEG", delivered="true") == 1
    assert value("ainode_results", kind="SEG", delivered="false") == 1
    assert value("ainode_results", kind="SR", delivered="true") == 1
    assert value("ainode_results", kind="SR", delivered="false") == 0
    assert value("ainode_results", kind="SC", delivered="false") == 0
    # The outbox, per destination: what an operator alerts on (dead rows).
    assert value("ainode_deliveries", destination="archive", state="pending") == 1
    assert value("ainode_deliveries", destination="archive", state="dead") == 0
    assert value("ainode_deliveries", destination="viewer", state="delivered") == 1
    # Finished steps only (the running infer step has no seconds yet).
    assert value("ainode_job_step_seconds_count", step="load", state="done") == 4
    assert value("ainode_job_step_seconds_sum", step="load", state="done") == pytest.approx(2.75)
    assert value("ainode_job_step_seconds_count", step="infer", state="done") == 1
    assert value("ainode_job_step_seconds_count", step="infer", state="failed") == 2
    assert value("ainode_job_step_seconds_sum", step="infer", state="failed") == pytest.approx(7.0)
    assert not any(
        name.startswith("ainode_job_step") and ("state", "running") in labels
        for name, labels in samples
    )

    # Computed at scrape time: a retry shows on the next scrape.
    node.client.post(f"/api/jobs/{job_id_of(node, 'bleed')}/retry")
    samples = metric_samples(admin.get("/metrics").text)
    assert value("ainode_jobs", state="queued") == 1
    assert value("ainode_jobs", state="failed") == 0


def test_each_app_has_its_own_registry(node: Node, tmp_path: Path) -> None:
    # A second app over the same database would clash in a global registry.
    settings = Settings(data_dir=tmp_path)
    other = create_app(
        settings, node.sessions, health=lambda: {}, retry_job=make_retry(node.sessions)
    )
    admin = {"Authorization": f"Bearer {node.tokens[Role.ADMIN]}"}
    with TestClient(other, base_url=BASE_URL, headers=admin) as client:
        text = client.get("/metrics").text
    assert "ainode_jobs{" in text
    assert node.as_role(Role.ADMIN).get("/metrics").status_code == 200
