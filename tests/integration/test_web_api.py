"""The web API over a real database (SQLite, then PostgreSQL): shapes, order, filters, errors.

Rows are inserted through the ORM; ``retry_job`` is a small real function that changes
the job row, so the API is checked against what the database then holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
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
from node.db.session import make_engine, make_session_factory, transaction
from node.settings import Settings
from node.web import create_app

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def seed(sessions: sessionmaker[Session]) -> None:
    """Two patients, two studies, four series, four jobs in every interesting state."""
    with transaction(sessions) as s:
        jane = Patient(patient_id="PID001", patient_name="DOE^JANE")
        rick = Patient(patient_id="PID002", patient_name="ROE^RICHARD")
        chest = Study(
            study_instance_uid="1.2.826.0.1.1",
            patient=jane,
            study_date="20240105",
            accession_number="ACC1",
            study_description="CT CHEST",
            first_received_at=at(0),
        )
        head = Study(
            study_instance_uid="1.2.826.0.1.2",
            patient=rick,
            study_date="20240210",
            accession_number="ACC2",
            study_description="<img src=x onerror=alert(1)>",
            first_received_at=at(60),
        )
        a1 = Series(
            series_instance_uid="1.2.826.0.1.1.1",
            study=chest,
            modality="CT",
            series_description="Lung 1mm",
            series_number=2,
            state=SeriesState.ROUTED,
            last_received_at=at(1),
            completed_at=at(2),
        )
        a2 = Series(
            series_instance_uid="1.2.826.0.1.1.2",
            study=chest,
            modality="SR",
            series_description="Dose report",
            series_number=1,
            state=SeriesState.NO_MODEL,
            state_reason="no model accepts modality SR",
            last_received_at=at(1),
            completed_at=at(2),
        )
        b1 = Series(
            series_instance_uid="1.2.826.0.1.2.1",
            study=head,
            modality="CT",
            series_description="Head axial",
            series_number=1,
            state=SeriesState.ROUTED,
            last_received_at=at(61),
            completed_at=at(62),
        )
        b2 = Series(
            series_instance_uid="1.2.826.0.1.2.2",
            study=head,
            modality="MR",
            series_description="T1",
            series_number=2,
            state=SeriesState.RECEIVING,
            last_received_at=at(63),
        )
        s.add_all([chest, head, a1, a2, b1, b2])
        for series, count in ((a1, 3), (a2, 1), (b1, 2)):
            for n in range(count):
                s.add(
                    Instance(
                        sop_instance_uid=f"{series.series_instance_uid}.{n + 1}",
                        series=series,
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        instance_number=n + 1,
                        path=f"{series.series_instance_uid}/{n + 1}.dcm",
                        size_bytes=1000,
                    )
                )
        s.flush()

        succeeded = Job(
            series=a1,
            model_name="lung-nodules",
            model_version="1.0",
            state=JobState.SUCCEEDED,
            attempts=1,
            created_at=at(10),
            started_at=at(11),
            finished_at=at(12),
            findings={"nodules": 2},
        )
        failed = Job(
            series=b1,
            model_name="bleed",
            model_version="2.1",
            state=JobState.FAILED,
            error="CUDA out of memory",
            attempts=2,
            created_at=at(70),
            started_at=at(71),
            finished_at=at(72),
        )
        running = Job(
            series=b1,
            model_name="midline",
            model_version="0.3",
            state=JobState.RUNNING,
            attempts=1,
            created_at=at(80),
            started_at=at(81),
        )
        delivering = Job(
            series=a1,
            model_name="emphysema",
            model_version="1.2",
            state=JobState.DELIVERING,
            attempts=1,
            created_at=at(20),
            started_at=at(21),
        )
        s.add_all([succeeded, failed, running, delivering])
        s.flush()
        steps = [
            (succeeded, 1, "load", "done", 0.5, ""),
            (succeeded, 1, "infer", "done", 2.5, ""),
            (succeeded, 1, "encode", "done", 0.25, ""),
            (succeeded, 1, "deliver", "done", 1.0, ""),
            (failed, 1, "load", "done", 1.0, ""),
            (failed, 1, "infer", "failed", 3.0, "oom"),
            (failed, 2, "load", "done", 0.5, ""),
            (failed, 2, "infer", "failed", 4.0, "CUDA out of memory"),
            (running, 1, "load", "done", 0.75, ""),
            (running, 1, "infer", "running", None, ""),
        ]
        for job, attempt, name, state, seconds, detail in steps:
            s.add(
                JobStep(
                    job=job,
                    attempt=attempt,
                    name=name,
                    state=StepState(state),
                    seconds=seconds,
                    detail=detail,
                    started_at=job.started_at,
                )
            )
        s.add_all(
            [
                ResultObject(
                    job=succeeded,
                    kind="SEG",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                    sop_instance_uid="2.25.1",
                    path="a/seg.dcm",
                    delivered_at=at(12),
                ),
                ResultObject(
                    job=succeeded,
                    kind="SR",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
                    sop_instance_uid="2.25.2",
                    path="a/sr.dcm",
                    delivered_at=at(12),
                ),
                ResultObject(
                    job=delivering,
                    kind="SEG",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                    sop_instance_uid="2.25.3",
                    path="b/seg.dcm",
                    delivery_error="association rejected",
                    deliveries=[
                        Delivery(
                            destination="archive",
                            state=DeliveryState.PENDING,
                            attempts=2,
                            next_attempt_at=at(13),
                            last_error="association rejected",
                        ),
                        Delivery(
                            destination="viewer",
                            state=DeliveryState.DELIVERED,
                            attempts=1,
                            next_attempt_at=at(11),
                            stored_at=at(12),
                            delivered_at=at(12),
                        ),
                    ],
                ),
            ]
        )


def make_retry(sessions: sessionmaker[Session]) -> Callable[[int], None]:
    """A real retry: a failed job goes back to queued; anything else is refused."""

    def retry(job_id: int) -> None:
        with transaction(sessions) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise LookupError(job_id)
            if job.state != JobState.FAILED:
                raise ValueError(f"job {job_id} is {job.state.value}; only a failed job retries")
            job.state = JobState.QUEUED
            job.error = ""
            job.finished_at = None

    return retry


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite under tmp_path, or a throwaway PostgreSQL database (unreachable = failure)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ainode.db'}"
    return str(request.getfixturevalue("postgres_url"))


@dataclass
class Node:
    client: TestClient
    sessions: sessionmaker[Session]
    health: dict[str, bool]


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[Node]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        ae_title="AINODE_T",
        destinations=[
            {"name": "viewer", "stow_url": "http://viewer/dicom-web", "kinds": ["SR", "SC"]}
        ],
    )
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    seed(sessions)
    health = {"scp": True, "database": True, "broker": True}
    app = create_app(
        settings, sessions, health=lambda: dict(health), retry_job=make_retry(sessions)
    )
    try:
        with TestClient(app) as client:
            yield Node(client, sessions, health)
    finally:
        engine.dispose()


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ---- studies -------------------------------------------------------------------------


def test_studies_newest_first_with_series_and_jobs(node: Node) -> None:
    response = node.client.get("/api/studies")
    assert response.status_code == 200
    studies = response.json()
    assert [s["study_instance_uid"] for s in studies] == ["1.2.826.0.1.2", "1.2.826.0.1.1"]

    head, chest = studies
    assert head["patient"] == {"patient_id": "PID002", "issuer": "", "name": "ROE^RICHARD"}
    assert head["description"] == "<img src=x onerror=alert(1)>"  # data, escaped by the page
    assert chest["study_date"] == "20240105"
    assert chest["accession_number"] == "ACC1"
    assert chest["description"] == "CT CHEST"
    assert parse_time(chest["first_received_at"]) == T0

    # Series by series number; instance counts; state and reason; jobs by id.
    assert [s["series_number"] for s in chest["series"]] == [1, 2]
    dose, lung = chest["series"]
    assert dose == {
        "id": dose["id"],
        "series_instance_uid": "1.2.826.0.1.1.2",
        "series_number": 1,
        "modality": "SR",
        "body_part_examined": "",
        "description": "Dose report",
        "instances": 1,
        "state": "no_model",
        "state_reason": "no model accepts modality SR",
        "last_received_at": dose["last_received_at"],
        "completed_at": dose["completed_at"],
        "jobs": [],
    }
    assert parse_time(dose["completed_at"]) == at(2)
    assert lung["instances"] == 3
    assert lung["state"] == "routed"
    assert [(j["model_name"], j["model_version"], j["state"]) for j in lung["jobs"]] == [
        ("lung-nodules", "1.0", "succeeded"),
        ("emphysema", "1.2", "delivering"),
    ]
    receiving = head["series"][1]
    assert (receiving["state"], receiving["instances"], receiving["completed_at"]) == (
        "receiving",
        0,
        None,
    )


def test_studies_limit(node: Node) -> None:
    newest = node.client.get("/api/studies", params={"limit": 1}).json()
    assert [s["study_instance_uid"] for s in newest] == ["1.2.826.0.1.2"]
    assert node.client.get("/api/studies", params={"limit": 0}).status_code == 422
    assert node.client.get("/api/studies", params={"limit": 1001}).status_code == 422
    assert node.client.get("/api/studies", params={"limit": 1000}).status_code == 200


# ---- jobs ----------------------------------------------------------------------------


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
        "model_name", "model_version", "state", "error", "attempts", "created_at",
        "enqueued_at", "started_at", "finished_at", "findings", "steps", "results",
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


def job_id_of(node: Node, model_name: str) -> int:
    return next(
        j["id"] for j in node.client.get("/api/jobs").json() if j["model_name"] == model_name
    )


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


# ---- health --------------------------------------------------------------------------


def test_healthz_is_200_only_when_every_part_answers(node: Node) -> None:
    response = node.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"scp": True, "database": True, "broker": True}

    node.health["broker"] = False
    response = node.client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"scp": True, "database": True, "broker": False}


def test_healthz_is_503_when_the_check_itself_breaks(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    Base.metadata.create_all(engine)

    def broken() -> dict[str, bool]:
        raise RuntimeError("probe crashed")

    def no_retry(job_id: int) -> None:
        raise LookupError(job_id)

    app = create_app(settings, make_session_factory(engine), health=broken, retry_job=no_retry)
    with TestClient(app) as client:
        response = client.get("/healthz")
    engine.dispose()
    assert response.status_code == 503
    assert response.json() == {"health_check": False}


# ---- deliveries ----------------------------------------------------------------------


def test_deliveries_filter_by_state_and_destination(node: Node) -> None:
    def rows(**params: object) -> list[tuple[str, str, str]]:
        response = node.client.get("/api/deliveries", params=params)
        assert response.status_code == 200, response.text
        return [(r["destination"], r["state"], r["sop_instance_uid"]) for r in response.json()]

    assert rows() == [("archive", "pending", "2.25.3"), ("viewer", "delivered", "2.25.3")]
    assert rows(state="pending") == [("archive", "pending", "2.25.3")]
    assert rows(state=["dead", "delivered"]) == [("viewer", "delivered", "2.25.3")]
    assert rows(destination="viewer", state="pending") == []
    (row,) = node.client.get("/api/deliveries", params={"state": "pending"}).json()
    delivering = next(
        j for j in node.client.get("/api/jobs").json() if j["model_name"] == "emphysema"
    )
    assert (row["job_id"], row["kind"], row["attempts"]) == (delivering["id"], "SEG", 2)
    assert row["last_error"] == "association rejected"
    assert node.client.get("/api/deliveries", params={"state": "lost"}).status_code == 422


# ---- metrics -------------------------------------------------------------------------


def test_metrics_count_the_database(node: Node) -> None:
    response = node.client.get("/metrics")
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
    samples = metric_samples(node.client.get("/metrics").text)
    assert value("ainode_jobs", state="queued") == 1
    assert value("ainode_jobs", state="failed") == 0


def test_each_app_has_its_own_registry(node: Node, tmp_path: Path) -> None:
    # A second app over the same database would clash in a global registry.
    settings = Settings(data_dir=tmp_path)
    other = create_app(
        settings, node.sessions, health=lambda: {}, retry_job=make_retry(node.sessions)
    )
    with TestClient(other) as client:
        text = client.get("/metrics").text
    assert "ainode_jobs{" in text
    assert node.client.get("/metrics").status_code == 200


# ---- the page ------------------------------------------------------------------------


def test_dashboard_page_and_assets_are_served(node: Node) -> None:
    page = node.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="studies"' in page.text and 'id="jobs"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    script = node.client.get("/static/app.js")
    assert script.status_code == 200
    assert "innerHTML" not in script.text
    assert node.client.get("/static/style.css").status_code == 200
    assert node.client.get("/api/node").json() == {
        "ae_title": "AINODE_T",
        "dicom_port": 11112,
        "archive": None,
        "destinations": [
            {
                "name": "viewer",
                "address": "http://viewer/dicom-web",
                "transport": "stow",
                "kinds": ["SR", "SC"],
                "models": [],
                "storage_commitment": False,
            }
        ],
    }
