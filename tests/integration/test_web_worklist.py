"""The worklist API over a real database (SQLite, then PostgreSQL, migrated to head): the
order, the filters, the pages, the findings in words, masking for a viewer, an operator's
acknowledgement (once: a second one is 409, also when two race), refused for a viewer,
kept on the real audit trail, and the overlay's thumbnail decoded with Pillow.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.finding_words import class_words, finding_lines, segment_words
from node.acknowledgement import AlreadyAcknowledged, acknowledge
from node.audit.events import AuditKind, EventOutcome
from node.audit.trail import AuditTrail
from node.audit.web_actions import action_recorder
from node.auth.roles import Role
from node.db.auditing import AuditEvent
from node.db.findings import CriticalFinding
from node.db.migrate import upgrade_to_head
from node.db.session import make_engine, make_session_factory
from node.settings import Settings
from node.web import create_app
from node.web.thumbnail import THUMBNAIL_PIXELS
from tests.web_node import BASE_URL, PASSWORD, add_principals, make_retry
from tests.worklist_seed import ORDER, Seeded, seed_worklist

MASKED = "***"


@dataclass
class Worklist:
    app: object
    sessions: sessionmaker[Session]
    tokens: dict[Role, str]
    seeded: Seeded

    def client(self, role: Role) -> TestClient:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return TestClient(self.app, base_url=BASE_URL, headers=headers)  # type: ignore[arg-type]


@pytest.fixture
def worklist(database_url: str, tmp_path: Path) -> Iterator[Worklist]:
    settings = Settings(data_dir=tmp_path / "node", database_url=database_url, ae_title="AINODE_T")
    engine = make_engine(settings)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    seeded = seed_worklist(sessions, settings.results_dir, tmp_path / "ct")
    tokens = add_principals(sessions)
    trail = AuditTrail.from_settings(settings, sessions)
    app = create_app(
        settings,
        sessions,
        health=lambda: {"database": True},
        retry_job=make_retry(sessions),
        record_action=action_recorder(trail),
    )
    try:
        yield Worklist(app, sessions, tokens, seeded)
    finally:
        trail.close()
        engine.dispose()


def accessions(client: TestClient, **params: object) -> list[str]:
    response = client.get("/api/worklist", params=params)
    assert response.status_code == 200, response.text
    return [row["accession_number"] for row in response.json()["rows"]]


def row_of(client: TestClient, accession: str) -> dict:
    rows = client.get("/api/worklist").json()["rows"]
    return next(row for row in rows if row["accession_number"] == accession)


# ---- order, filters, pages -------------------------------------------------------------


def test_open_critical_first_then_urgency_then_oldest(worklist: Worklist) -> None:
    client = worklist.client(Role.OPERATOR)
    page = client.get("/api/worklist").json()
    assert (page["total"], page["offset"], page["limit"]) == (7, 0, 25)  # ACC-NOJOB is left out
    assert [row["accession_number"] for row in page["rows"]] == ORDER
    assert [(r["urgency"], r["unacknowledged_critical"]) for r in page["rows"]] == [
        ("STAT", 1), ("HIGH", 1), ("STAT", 0), ("HIGH", 0), ("MEDIUM", 0),
        # a LOW job whose (acknowledged) critical finding is MEDIUM: the highest counts
        ("MEDIUM", 0),
        ("LOW", 0),
    ]  # fmt: skip
    ages = [row["age_seconds"] for row in page["rows"]]
    assert ages[2] > 3000 and ages[4] > ages[5]  # 1 h; within MEDIUM the oldest first


def test_row_shape_findings_in_words_and_critical(worklist: Worklist) -> None:
    seeded = worklist.seeded
    stat = row_of(worklist.client(Role.OPERATOR), "ACC-STAT")
    assert stat["study_instance_uid"] == seeded.studies["ACC-STAT"]
    assert stat["patient"] == {"patient_id": "PID-ACC-STAT", "issuer": "", "name": "ROE^RICHARD"}
    assert (stat["modalities"], stat["identifiers_hidden"]) == (["CT"], False)
    received = datetime.fromisoformat(stat["received_at"].replace("Z", "+00:00"))
    assert received.tzinfo is not None and received < datetime.now(UTC)
    segmenter, classifier = stat["jobs"]
    assert (segmenter["id"], segmenter["priority"], segmenter["state"]) == (
        seeded.jobs["stat_seg"], "STAT", "succeeded",
    )  # fmt: skip
    assert segmenter["findings"] == ["Sphere lesion: 4.4 mL"]
    assert classifier["findings"] == ["Nodule: present, probability 0.93 (threshold 0.50)"]
    assert segmenter["thumbnail"] == f"/api/jobs/{seeded.jobs['stat_seg']}/thumbnail"
    assert classifier["thumbnail"] is None
    assert stat["thumbnail"] == segmenter["thumbnail"]
    (finding,) = segmenter["critical_findings"]
    assert finding["id"] == seeded.findings["stat"]
    assert (finding["urgency"], finding["value"], finding["unit"], finding["threshold"]) == (
        "STAT", 4.387, "ml", 1.0,
    )  # fmt: skip
    assert finding["text"] == "Sphere lesion: 4.4 ml (critical at 1.0 ml)"
    assert (finding["acknowledged"], finding["acknowledged_by"], finding["acknowledged_at"]) == (
        False, "", None,
    )  # fmt: skip
    acknowledged = row_of(worklist.client(Role.OPERATOR), "ACC-MED2")["jobs"][0]
    (done,) = acknowledged["critical_findings"]
    assert (done["acknowledged"], done["acknowledged_by"], done["acknowledgement_note"]) == (
        True, "operator", "called the ward",
    )  # fmt: skip
    failed = row_of(worklist.client(Role.OPERATOR), "ACC-LOW")["jobs"][0]
    assert (failed["state"], failed["findings"], failed["critical_findings"]) == ("failed", [], [])


def test_filters_choose_studies(worklist: Worklist) -> None:
    client = worklist.client(Role.OPERATOR)
    assert accessions(client, modality="MR") == ["ACC-HIGH"]
    assert accessions(client, model="test-sphere-seg") == ["ACC-STAT", "ACC-MED1"]
    assert accessions(client, state="failed") == ["ACC-LOW"]
    assert accessions(client, state="queued") == ["ACC-STAT2"]
    assert accessions(client, modality="CT", model="mr-bleed") == []
    assert accessions(client, modality="CT", state="succeeded") == [
        "ACC-STAT", "ACC-HIGHCRIT", "ACC-MED1", "ACC-MED2",
    ]  # fmt: skip
    # A chosen study shows all its jobs, not only the model filtered on.
    (row,) = client.get("/api/worklist", params={"model": "test-sphere-seg", "limit": 1}).json()[
        "rows"
    ]
    assert len(row["jobs"]) == 2
    assert client.get("/api/worklist", params={"state": "exploded"}).status_code == 422


def test_pages(worklist: Worklist) -> None:
    client = worklist.client(Role.OPERATOR)
    pages = [
        client.get("/api/worklist", params={"offset": offset, "limit": 3}).json()
        for offset in (0, 3, 6, 9)
    ]
    assert [page["total"] for page in pages] == [7, 7, 7, 7]
    assert [[row["accession_number"] for row in page["rows"]] for page in pages] == [
        ORDER[:3], ORDER[3:6], ORDER[6:], [],
    ]  # fmt: skip
    assert client.get("/api/worklist", params={"limit": 0}).status_code == 422
    assert client.get("/api/worklist", params={"limit": 201}).status_code == 422


# ---- who sees what -------------------------------------------------------------------


def test_viewer_sees_identifiers_masked(worklist: Worklist) -> None:
    rows = worklist.client(Role.VIEWER).get("/api/worklist").json()["rows"]
    assert {
        (r["patient"]["name"], r["patient"]["patient_id"], r["accession_number"]) for r in rows
    } == {(MASKED, MASKED, MASKED)}
    assert all(row["identifiers_hidden"] for row in rows)
    # The findings, their words and the order are the same for everyone.
    shown = worklist.client(Role.OPERATOR).get("/api/worklist").json()["rows"]
    assert [r["study_instance_uid"] for r in rows] == [r["study_instance_uid"] for r in shown]
    assert [r["jobs"] for r in rows] == [r["jobs"] for r in shown]


def test_worklist_needs_a_principal(worklist: Worklist) -> None:
    anonymous = TestClient(worklist.app, base_url=BASE_URL)  # type: ignore[arg-type]
    assert anonymous.get("/api/worklist").status_code == 401
    thumbnail = f"/api/jobs/{worklist.seeded.jobs['stat_seg']}/thumbnail"
    assert anonymous.get(thumbnail).status_code == 401
    assert (
        anonymous.post(
            f"/api/critical-findings/{worklist.seeded.findings['stat']}/acknowledge"
        ).status_code
        == 401
    )


# ---- acknowledging -------------------------------------------------------------------


def operator_actions(sessions: sessionmaker[Session]) -> list[AuditEvent]:
    with sessions() as session:
        query = select(AuditEvent).where(AuditEvent.kind == AuditKind.OPERATOR_ACTION)
        return list(session.scalars(query.order_by(AuditEvent.id)))


def test_operator_acknowledges_once_and_the_trail_keeps_it(worklist: Worklist) -> None:
    finding_id = worklist.seeded.findings["stat"]
    url = f"/api/critical-findings/{finding_id}/acknowledge"
    client, csrf = signed_in(worklist, Role.OPERATOR)
    before = datetime.now(UTC)
    response = client.post(
        url, json={"note": "  phoned the ward  "}, headers={"X-CSRF-Token": csrf}
    )
    assert response.status_code == 200, response.text
    shown = response.json()
    assert (shown["id"], shown["acknowledged"], shown["acknowledged_by"]) == (
        finding_id,
        True,
        "operator",
    )
    assert (shown["acknowledged_role"], shown["acknowledgement_note"]) == (
        "operator",
        "phoned the ward",
    )
    at = datetime.fromisoformat(shown["acknowledged_at"].replace("Z", "+00:00"))
    assert before <= at <= datetime.now(UTC)

    again = client.post(url, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409
    assert again.json()["detail"].startswith(
        f"critical finding {finding_id} was acknowledged by operator (operator) at "
    )
    with worklist.sessions() as session:
        row = session.get_one(CriticalFinding, finding_id)
        assert (row.acknowledged_by, row.acknowledgement_note) == ("operator", "phoned the ward")

    # The study is no longer among the open critical ones: STAT, after the older STAT one.
    order = accessions(worklist.client(Role.OPERATOR))
    assert order[:3] == ["ACC-HIGHCRIT", "ACC-STAT2", "ACC-STAT"]
    assert row_of(worklist.client(Role.OPERATOR), "ACC-STAT")["unacknowledged_critical"] == 0

    done, refused = operator_actions(worklist.sessions)
    assert (done.actor, done.actor_role, done.outcome) == (
        "operator",
        "operator",
        EventOutcome.SUCCESS,
    )
    assert done.detail["action"] == "critical_finding_acknowledge"
    assert (done.detail["target"], done.detail["reason"]) == (url, "phoned the ward")
    assert refused.outcome == EventOutcome.MINOR_FAILURE
    assert "refused: critical finding" in refused.detail["reason"]


def test_viewer_may_not_acknowledge(worklist: Worklist) -> None:
    finding_id = worklist.seeded.findings["stat"]
    response = worklist.client(Role.VIEWER).post(f"/api/critical-findings/{finding_id}/acknowledge")
    assert response.status_code == 403
    assert response.json() == {"detail": "your role (viewer) may not do this; it needs operator"}
    with worklist.sessions() as session:
        assert session.get_one(CriticalFinding, finding_id).acknowledged_at is None
    (refusal,) = operator_actions(worklist.sessions)
    assert (refusal.detail["action"], refusal.outcome) == ("refused", EventOutcome.MINOR_FAILURE)


def test_unknown_finding_is_404_and_a_long_note_422(worklist: Worklist) -> None:
    client = worklist.client(Role.ADMIN)
    response = client.post("/api/critical-findings/9999/acknowledge")
    assert (response.status_code, response.json()) == (
        404,
        {"detail": "critical finding 9999 not found"},
    )
    url = f"/api/critical-findings/{worklist.seeded.findings['stat']}/acknowledge"
    assert client.post(url, json={"note": "x" * 2001}).status_code == 422


def test_two_acknowledgements_at_once_one_wins(worklist: Worklist) -> None:
    finding_id = worklist.seeded.findings["high_crit"]
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def attempt(name: str) -> None:
        start.wait()
        try:
            acknowledge(worklist.sessions, finding_id, name, Role.OPERATOR, "")
            outcomes.append(f"won:{name}")
        except AlreadyAcknowledged:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=(f"reader{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [o for o in outcomes if o.startswith("won:")]
    assert len(outcomes) == 6 and len(winners) == 1, outcomes
    with worklist.sessions() as session:
        assert f"won:{session.get_one(CriticalFinding, finding_id).acknowledged_by}" == winners[0]


def signed_in(worklist: Worklist, role: Role) -> tuple[TestClient, str]:
    """A client signed in through the form (the dashboard's way), and its CSRF token."""
    client = TestClient(worklist.app, base_url=BASE_URL)  # type: ignore[arg-type]
    form = client.get("/signin")
    token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    data = {"name": role.value, "password": PASSWORD, "csrf_token": token, "next": "/"}
    assert client.post("/signin", data=data, follow_redirects=False).status_code == 303
    return client, client.get("/api/session").json()["csrf_token"]


# ---- the thumbnail ---------------------------------------------------------------------


def test_thumbnail_is_a_bounded_png_of_the_overlay(worklist: Worklist) -> None:
    url = row_of(worklist.client(Role.OPERATOR), "ACC-STAT")["thumbnail"]
    client = worklist.client(Role.VIEWER)  # the overlay shows no patient identifier
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-store"  # as every API answer
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert (image.format, image.mode) == ("PNG", "RGB")
    rows, columns = worklist.seeded.overlay_shape
    assert max(image.size) == THUMBNAIL_PIXELS and max(image.size) <= max(rows, columns)
    assert abs(image.size[0] / image.size[1] - columns / rows) < 0.02  # the aspect kept
    # The middle picture of the sphere: the segment's colour fills its centre.
    red, green, blue = image.getpixel((image.size[0] // 2, int(image.size[1] * 0.6)))
    assert red > 150 and red > green + 60 and red > blue + 40

    small = Image.open(io.BytesIO(client.get(url, params={"size": 64}).content))
    assert max(small.size) == 64
    assert client.get(url, params={"size": 4096}).status_code == 422


def test_no_thumbnail_without_an_overlay(worklist: Worklist) -> None:
    client = worklist.client(Role.VIEWER)
    classifier = worklist.seeded.jobs["stat_class"]
    response = client.get(f"/api/jobs/{classifier}/thumbnail")
    assert (response.status_code, response.json()) == (
        404,
        {"detail": f"job {classifier} has no overlay"},
    )
    assert client.get("/api/jobs/9999/thumbnail").status_code == 404


# ---- the words the overlay and the worklist share ----------------------------------------


def test_finding_words() -> None:
    assert segment_words("Lung nodule", 2.449) == "Lung nodule: 2.4 mL"
    assert segment_words("Lung nodule", 0.0123) == "Lung nodule: 0.012 mL"
    assert class_words("Nodule", 0.12, 0.5) == "Nodule: absent, probability 0.12 (threshold 0.50)"
    assert class_words("Nodule", 0.5, None, present=True) == "Nodule: present, probability 0.50"
    assert finding_lines(None) == finding_lines({"nodules": 2}) == []
    assert finding_lines(
        {
            "segments": {"Lung": {"volume_ml": 3100.04}, "odd": {}},
            "classes": {"c": {"probability": 0.7}},
        }
    ) == ["Lung: 3100.0 mL", "c: probability 0.70"]
