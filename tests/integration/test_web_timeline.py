"""A study's timeline and the result latency histogram over a real database (SQLite, then
PostgreSQL): a study with known times is added to the seeded one, then read back through
``GET /api/studies/{uid}/timeline`` and ``GET /metrics``."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from node.auth.roles import Role
from node.db.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Instance,
    Job,
    JobAction,
    JobState,
    JobStep,
    Patient,
    ResultObject,
    Series,
    SeriesState,
    StepState,
    Study,
)
from node.db.session import transaction
from tests.web_node import Node, metric_samples, parse_time

T = datetime.fromisoformat("2024-06-03T09:00:00+00:00")
STUDY = "1.2.826.0.7.1"
MODEL = "lung-seg"


def after(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def add_timed_study(node: Node) -> None:
    """Instances at 0, 1, 2 s; complete at 4 s; a job queued at 5 s whose steps run from
    6 s to 9 s; its SEG and SR stored at the archive at 10 and 11 s (the SR after one
    failed try) and committed at 12 s; its SEG stored at a viewer at 10.5 s."""
    with transaction(node.sessions) as s:
        study = Study(
            study_instance_uid=STUDY,
            patient=Patient(patient_id="PID007", patient_name="TIMED^TOM"),
            accession_number="ACC7",
            study_description="CT CHEST TIMED",
            first_received_at=after(0),
        )
        series = Series(
            series_instance_uid=f"{STUDY}.1",
            study=study,
            modality="CT",
            series_description="Lung",
            series_number=1,
            state=SeriesState.ROUTED,
            last_received_at=after(2),
            completed_at=after(4),
            completed_by="quiet period of 2 s",
        )
        for n in range(3):
            s.add(
                Instance(
                    sop_instance_uid=f"{STUDY}.1.{n}",
                    series=series,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    path=f"t/{n}.dcm",
                    size_bytes=100,
                    received_at=after(n),
                )
            )
        job = Job(
            series=series,
            model_name=MODEL,
            model_version="1.0",
            state=JobState.SUCCEEDED,
            attempts=1,
            created_at=after(5),
            started_at=after(6),
            finished_at=after(12),
        )
        for name, start, seconds in (("load", 6, 1.0), ("infer", 7, 1.5), ("encode", 8.5, 0.5)):
            s.add(
                JobStep(
                    job=job,
                    name=name,
                    state=StepState.DONE,
                    started_at=after(start),
                    seconds=seconds,
                )
            )
        seg_archive = Delivery(
            destination="archive",
            state=DeliveryState.DELIVERED,
            attempts=1,
            stored_at=after(10),
            delivered_at=after(12),
        )
        seg_viewer = Delivery(
            destination="viewer",
            state=DeliveryState.DELIVERED,
            attempts=1,
            stored_at=after(10.5),
            delivered_at=after(10.5),
        )
        sr_archive = Delivery(
            destination="archive",
            state=DeliveryState.DELIVERED,
            attempts=2,
            stored_at=after(11),
            delivered_at=after(12),
        )
        s.add_all(
            [
                ResultObject(
                    job=job, kind="SEG", sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                    sop_instance_uid="2.25.701", path="t/seg.dcm",
                    deliveries=[seg_archive, seg_viewer],
                ),
                ResultObject(
                    job=job, kind="SR", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                    sop_instance_uid="2.25.702", path="t/sr.dcm", deliveries=[sr_archive],
                ),
            ]
        )  # fmt: skip
        for row, number, at, outcome, detail in (
            (seg_archive, 1, 10, "stored", ""),
            (seg_viewer, 1, 10.5, "stored", ""),
            (sr_archive, 1, 9.5, "failed", "association rejected"),
            (sr_archive, 2, 11, "stored", ""),
            (seg_archive, 1, 12, "committed", ""),
            (sr_archive, 2, 12, "committed", ""),
        ):
            s.add(
                DeliveryAttempt(
                    delivery=row, number=number, at=after(at), outcome=outcome, detail=detail
                )
            )
        s.flush()
        s.add(
            JobAction(
                job_pk=job.id, action="job_retry", actor="op1", actor_role="operator",
                reason="archive was down", outcome="sent again", at=after(11.5),
            )
        )  # fmt: skip


def kinds(events: list[dict]) -> list[str]:
    return [event["kind"] for event in events]


def test_the_timeline_orders_every_event_with_offsets(node: Node) -> None:
    add_timed_study(node)
    response = node.client.get(f"/api/studies/{STUDY}/timeline")
    assert response.status_code == 200, response.text
    timeline = response.json()
    assert timeline["study_instance_uid"] == STUDY
    assert parse_time(timeline["started_at"]) == T
    assert (timeline["accession_number"], timeline["patient"]["name"]) == ("ACC7", "TIMED^TOM")
    assert timeline["identifiers_hidden"] is False

    (series,) = timeline["series"]
    assert (series["modality"], series["instances"], series["state"]) == ("CT", 3, "routed")
    assert kinds(series["events"]) == ["received_first", "received_last", "complete"]
    assert [e["offset_seconds"] for e in series["events"]] == [0, 2, 4]
    assert series["events"][2]["detail"] == "quiet period of 2 s"

    (job,) = series["jobs"]
    assert (job["model_name"], job["state"]) == (MODEL, "succeeded")
    events = job["events"]
    assert [(e["kind"], e["name"], e["offset_seconds"]) for e in events] == [
        ("queued", "", 5),
        ("step", "load", 6),
        ("step", "infer", 7),
        ("step", "encode", 8.5),
        ("failed", "archive", 9.5),
        ("stored", "archive", 10),
        ("stored", "viewer", 10.5),
        ("delivered", "viewer", 10.5),
        ("stored", "archive", 11),
        ("action", "job_retry", 11.5),
        ("committed", "archive", 12),
        ("committed", "archive", 12),
        ("delivered", "archive", 12),
        ("delivered", "archive", 12),
        ("finished", "", 12),
    ]
    infer = events[2]
    assert (infer["state"], infer["seconds"], infer["attempt"]) == ("done", 1.5, 1)
    failed = events[4]
    assert (failed["result_kind"], failed["attempt"], failed["detail"]) == (
        "SR",
        1,
        "association rejected",
    )
    assert events[9]["detail"] == "by op1; archive was down; sent again"
    assert events[-1]["state"] == "succeeded"
    # Last instance (2 s) to the last result stored there: archive 11 s, viewer 10.5 s.
    assert job["latency_seconds"] == {"archive": 9.0, "viewer": 8.5}


def test_the_timeline_masks_identifiers_and_needs_a_principal(node: Node) -> None:
    add_timed_study(node)
    viewer = node.as_role(Role.VIEWER).get(f"/api/studies/{STUDY}/timeline").json()
    assert viewer["identifiers_hidden"] is True
    assert viewer["patient"]["name"] == viewer["patient"]["patient_id"] == "***"
    assert viewer["accession_number"] == "***"
    assert viewer["series"][0]["jobs"][0]["latency_seconds"] == {"archive": 9.0, "viewer": 8.5}
    assert node.as_role(None).get(f"/api/studies/{STUDY}/timeline").status_code == 401
    missing = node.client.get("/api/studies/1.2.3.404/timeline")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "study 1.2.3.404 not found"


def test_a_study_still_arriving_has_only_its_received_events(node: Node) -> None:
    # The seeded head study: an MR series still receiving, with no instance rows.
    timeline = node.client.get("/api/studies/1.2.826.0.1.2/timeline").json()
    receiving = next(s for s in timeline["series"] if s["state"] == "receiving")
    assert kinds(receiving["events"]) == ["received_last"]
    assert receiving["jobs"] == []


def test_the_latency_histogram_per_model_and_destination(node: Node) -> None:
    add_timed_study(node)
    samples = metric_samples(node.as_role(Role.ADMIN).get("/metrics").text)

    def value(name: str, **labels: str) -> float:
        return samples[(f"ainode_result_latency_seconds_{name}", tuple(sorted(labels.items())))]

    archive = {"model": MODEL, "destination": "archive"}
    assert value("count", **archive) == 1
    assert value("sum", **archive) == pytest.approx(9.0)
    assert value("bucket", le="5.0", **archive) == 0
    assert value("bucket", le="10.0", **archive) == 1
    assert value("bucket", le="+Inf", **archive) == 1
    assert value("sum", model=MODEL, destination="viewer") == pytest.approx(8.5)
    # The seeded jobs: stored 11 minutes after their last instance, past the last bucket;
    # a job with a row still pending at a destination is no observation there.
    seeded = {"model": "lung-nodules", "destination": "pacs"}
    assert value("count", **seeded) == 1
    assert value("bucket", le="600.0", **seeded) == 0
    assert value("bucket", le="+Inf", **seeded) == 1
    assert value("count", model="emphysema", destination="viewer") == 1
    pending = (("destination", "archive"), ("model", "emphysema"))
    assert ("ainode_result_latency_seconds_count", pending) not in samples
