"""``GET /api/studies`` over a real database (SQLite, then PostgreSQL): shapes, order, limits."""

from __future__ import annotations

from tests.web_node import T0, Node, at, parse_time


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
        "completed_by": "quiet period (60 s without a new instance)",
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
