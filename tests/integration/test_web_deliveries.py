"""``GET /api/deliveries`` over a real database (SQLite, then PostgreSQL): the outbox rows,
filtered by state and destination."""

from __future__ import annotations

from tests.web_node import Node


def test_deliveries_filter_by_state_and_destination(node: Node) -> None:
    def rows(**params: object) -> list[tuple[str, str, str]]:
        response = node.client.get("/api/deliveries", params=params)
        assert response.status_code == 200, response.text
        return [(r["destination"], r["state"], r["sop_instance_uid"]) for r in response.json()]

    assert rows() == [
        ("pacs", "delivered", "2.25.1"),
        ("pacs", "delivered", "2.25.2"),
        ("archive", "pending", "2.25.3"),
        ("viewer", "delivered", "2.25.3"),
    ]
    assert rows(state="pending") == [("archive", "pending", "2.25.3")]
    assert rows(state=["dead", "delivered"]) == [
        ("pacs", "delivered", "2.25.1"),
        ("pacs", "delivered", "2.25.2"),
        ("viewer", "delivered", "2.25.3"),
    ]
    assert rows(destination="viewer", state="pending") == []
    (row,) = node.client.get("/api/deliveries", params={"state": "pending"}).json()
    delivering = next(
        j for j in node.client.get("/api/jobs").json() if j["model_name"] == "emphysema"
    )
    assert (row["job_id"], row["kind"], row["attempts"]) == (delivering["id"], "SEG", 2)
    assert row["last_error"] == "association rejected"
    assert node.client.get("/api/deliveries", params={"state": "lost"}).status_code == 422
