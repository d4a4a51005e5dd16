"""``/api/jobs`` over a real database (SQLite, then PostgreSQL): shapes, order, filters,
errors, and retrying a job through the node's ``retry_job``."""

from __future__ import annotations

from node.db.models import Job, JobState
from tests.web_node import Node, at, job_id_of, parse_time


def test_jobs_newest_first_with_steps_and_results(node: Node) -> None:
    jobs = node.client.get("/api/jobs").json()
    assert [j["model_name"] for j in jobs] == ["midline", "bleed", "emphysema", "lung-nodules"]

    done = jobs[3]
    assert done["study_instance_uid"] == "1.2.826.0.1.1"
    assert done["series_instance_uid"] == "1.2.826.0.1.1.1"
    assert (done["modality"], done["series_description"]) == ("CT", "Lung 1mm")
    assert (done["state"], done["error"], done["attempts"]) == ("succeeded", "", 1)
    assert done["findings"] == {"nodules": 2}
    assert parse_time(done["created_at"]) == at(10)
    assert parse_time(done["started_at"]) == at(11)
    assert parse_time(done["finished_at"]) == at(12)
    assert done["enqueued_at"] is None
    assert [(s["name"], s["state"], s["seconds"]) for s in done["steps"]] == [
        ("load", "done", 0.5),
        ("infer", "done", 2.5),
        ("encode", "done", 0.25),
        ("deliver", "done", 1.0),
    ]
    assert [(r["kind"], r["sop_instance_uid"]) for r in done["results"]] == [
        ("SEG", "2.25.1"),
        ("SR", "2.25.2"),
    ]
    assert all(parse_time(r["delivered_at"]) == at(12) for r in done["results"])

    delivering = jobs[2]
    assert delivering["results"] == [
        {
            "kind": "SEG",
            "sop_instance_uid": "2.25.3",
            "delivered_at": None,
            "delivery_error": "association rejected",
            "deliveries": [
                {
                    "destination": "archive",
                    "state": "pending",
                    "attempts": 2,
                    "next_attempt_at": at(13).isoformat().replace("+00:00", "Z"),
                    "last_error": "association rejected",
                    "stored_at": None,
                    "delivered_at": None,
                },
                {
                    "destination": "viewer",
                    "state": "delivered",
                    "attempts": 1,
                    "next_attempt_at": None,
                    "last_error": "",
                    "stored_at": at(12).isoformat().replace("+00:00", "Z"),
                    "delivered_at": at(12).isoformat().replace("+00:00", "Z"),
                },
            ],
        }
    ]
    running = jobs[0]
    assert running["finished_at"] is None
    assert running["findings"] is None
    assert running["steps"][-1]["seconds"] is None


def test_job_shows_only_its_latest_attempt(node: Node) -> None:
    failed_id = node.client.get("/api/jobs", params={"state": "failed"}).json()[0]["id"]
    job = node.client.get(f"/api/jobs/{failed_id}").json()
    assert (job["state"], job["error"], job["attempts"]) == ("failed", "CUDA out of memory", 2)
    assert [
        (s["attempt"], s["name"], s["state"], s["seconds"], s["detail"]) for s in job["steps"]
    ] == [
        (2, "load", "done", 0.5, ""),
        (2, "infer", "failed", 4.0, "CUDA out of memory"),
    ]
    assert set(job) == {
        "id", "study_instance_uid", "series_instance_uid", "modality", "series_description",
        "model_name", "model_version", "state", "priority", "error", "attempts", "created_at",
        "enqueued_at", "started_at", "finished_at", "findings", "steps", "results", "actions",
    }  # fmt: skip


def test_jobs_state_filter_and_limit(node: Node) -> None:
    def names(**params: object) -> list[str]:
        response = node.client.get("/api/jobs", params=params)
        assert response.status_code == 200, response.text
        return [j["model_name"] for j in response.json()]

    assert names(state="failed") == ["bleed"]
    assert names(state=["failed", "running"]) == ["midline", "bleed"]
    assert names(state="queued") == []
    assert names(limit=2) == ["midline", "bleed"]
    assert node.client.get("/api/jobs", params={"state": "exploded"}).status_code == 422
    assert node.client.get("/api/jobs", params={"limit": 1001}).status_code == 422


def test_unknown_job_is_404(node: Node) -> None:
    response = node.client.get("/api/jobs/9999")
    assert response.status_code == 404
    assert response.json() == {"detail": "job 9999 not found"}


# ---- retry ---------------------------------------------------------------------------


def test_retry_failed_job_queues_it(node: Node) -> None:
    job_id = job_id_of(node, "bleed")
    response = node.client.post(f"/api/jobs/{job_id}/retry")
    assert response.status_code == 202
    assert response.json() == {"id": job_id, "state": "queued"}

    with node.sessions() as s:
        row = s.get(Job, job_id)
        assert row is not None
        assert (row.state, row.error) == (JobState.QUEUED, "")
    job = node.client.get(f"/api/jobs/{job_id}").json()
    assert (job["state"], job["error"], job["finished_at"]) == ("queued", "", None)


def test_retry_refused_is_409_with_reason(node: Node) -> None:
    job_id = job_id_of(node, "midline")
    response = node.client.post(f"/api/jobs/{job_id}/retry")
    assert response.status_code == 409
    assert response.json() == {"detail": f"job {job_id} is running; only a failed job retries"}
    assert node.client.get(f"/api/jobs/{job_id}").json()["state"] == "running"


def test_retry_unknown_job_is_404(node: Node) -> None:
    response = node.client.post("/api/jobs/9999/retry")
    assert response.status_code == 404
    assert response.json() == {"detail": "job 9999 not found"}
