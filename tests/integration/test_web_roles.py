"""Roles over a real database (SQLite, then PostgreSQL): who sees patient identifiers,
who may retry, and who may re-analyse, with the node's own retry and re-analysis
(``node.jobs.retry`` over the real ledger, outbox and a queue on the machine's Redis).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.auth.roles import Role
from node.db.models import Delivery, DeliveryState, Job, JobAction, JobState
from node.db.session import transaction
from node.delivery.outbox import Outbox
from node.jobs.celery_app import broker_lists, make_celery
from node.jobs.contracts import GPU_QUEUE, IO_QUEUE
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.jobs.retry import JobReanalysis, JobRetry
from node.settings import Settings
from tests.web_node import Node, job_id_of, served_node

MASKED = "***"


def patients(client) -> list[tuple[str, str, str, str, bool]]:  # noqa: ANN001
    return [
        (
            s["patient"]["name"],
            s["patient"]["patient_id"],
            s["accession_number"],
            s["patient_conflicts"],
            s["identifiers_hidden"],
        )
        for s in client.get("/api/studies").json()
    ]


def test_viewer_sees_identifiers_masked_operator_and_admin_see_them(node: Node) -> None:
    assert patients(node.as_role(Role.VIEWER)) == [
        (MASKED, MASKED, MASKED, "", True),
        (MASKED, MASKED, MASKED, MASKED, True),
    ]
    shown = [
        ("ROE^RICHARD", "PID002", "ACC2", "", False),
        ("DOE^JANE", "PID001", "ACC1", "PatientName: DOE^JANE / DOE^JANET", False),
    ]
    assert patients(node.as_role(Role.OPERATOR)) == shown
    assert patients(node.as_role(Role.ADMIN)) == shown
    # What is not an identifier stays readable for the viewer.
    study = node.as_role(Role.VIEWER).get("/api/studies").json()[1]
    assert (study["study_instance_uid"], study["description"]) == ("1.2.826.0.1.1", "CT CHEST")


def test_which_roles_see_identifiers_is_a_setting(database_url: str, tmp_path: Path) -> None:
    with served_node(database_url, tmp_path, phi_roles="admin") as node:
        assert patients(node.as_role(Role.OPERATOR))[0][4] is True
        assert patients(node.as_role(Role.ADMIN))[0][4] is False


def test_viewers_may_be_allowed_identifiers(database_url: str, tmp_path: Path) -> None:
    with served_node(database_url, tmp_path, phi_roles="viewer,operator,admin") as node:
        assert patients(node.as_role(Role.VIEWER))[0][:3] == ("ROE^RICHARD", "PID002", "ACC2")


def test_viewer_may_not_retry(node: Node) -> None:
    job_id = job_id_of(node, "bleed")
    response = node.as_role(Role.VIEWER).post(f"/api/jobs/{job_id}/retry")
    assert response.status_code == 403
    assert response.json() == {"detail": "your role (viewer) may not do this; it needs operator"}
    with node.sessions() as s:
        assert s.get_one(Job, job_id).state is JobState.FAILED


# ---- the node's own retry and re-analysis ----------------------------------------------


@pytest.fixture
def wired(database_url: str, tmp_path: Path, machine_redis_url: str) -> Iterator[Node]:
    def job_actions(sessions: sessionmaker[Session]) -> dict[str, object]:
        ledger = JobLedger(sessions)
        outbox = Outbox(sessions, Settings(data_dir=tmp_path))
        queue = JobQueue(make_celery(machine_redis_url, 60), ledger)
        return {
            "retry_job": JobRetry(ledger, outbox, queue),
            "reanalyse_job": JobReanalysis(ledger, queue),
        }

    with served_node(database_url, tmp_path, job_actions=job_actions) as node:
        yield node


def queued(url: str, queue: str) -> int:
    client = redis.Redis.from_url(url)
    return sum(int(client.llen(key)) for key in broker_lists(queue))  # every priority


def actions_of(node: Node, job_id: int) -> list[tuple[str, str, str, str, str]]:
    with node.sessions() as s:
        rows = s.scalars(select(JobAction).where(JobAction.job_pk == job_id)).all()
        return [(a.action, a.actor, a.actor_role, a.reason, a.outcome) for a in rows]


def test_retry_of_a_succeeded_job_is_refused(wired: Node, machine_redis_url: str) -> None:
    job_id = job_id_of(wired, "lung-nodules")
    response = wired.client.post(f"/api/jobs/{job_id}/retry")
    assert response.status_code == 409
    assert response.json()["detail"].startswith(f"job {job_id} succeeded: nothing failed")
    assert f"POST /api/jobs/{job_id}/reanalyse" in response.json()["detail"]
    with wired.sessions() as s:
        assert s.get_one(Job, job_id).state is JobState.SUCCEEDED
    assert actions_of(wired, job_id) == []
    assert queued(machine_redis_url, GPU_QUEUE) == 0
    (record,) = wired.actions
    assert (record.action, record.succeeded, record.target) == (
        "job_retry",
        False,
        f"/api/jobs/{job_id}/retry",
    )


def test_retry_of_a_failed_analysis_analyses_it_again(wired: Node, machine_redis_url: str) -> None:
    job_id = job_id_of(wired, "bleed")
    response = wired.client.post(f"/api/jobs/{job_id}/retry", json={"reason": "disk freed"})
    assert response.status_code == 202, response.text
    assert response.json() == {"id": job_id, "state": "queued"}
    assert queued(machine_redis_url, GPU_QUEUE) == 1
    assert actions_of(wired, job_id) == [
        ("retry", "token:operator-script", "operator", "disk freed", "analysed again")
    ]
    (shown,) = wired.client.get(f"/api/jobs/{job_id}").json()["actions"]
    assert (shown["action"], shown["actor"], shown["reason"]) == (
        "retry",
        "token:operator-script",
        "disk freed",
    )


def test_retry_of_a_failed_delivery_re_sends_its_results(
    wired: Node, machine_redis_url: str
) -> None:
    job_id = job_id_of(wired, "emphysema")
    with transaction(wired.sessions) as s:
        s.get_one(Job, job_id).state = JobState.FAILED
        for row in s.scalars(select(Delivery).where(Delivery.destination == "archive")):
            row.state = DeliveryState.DEAD
    response = wired.client.post(f"/api/jobs/{job_id}/retry")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "delivering"
    assert queued(machine_redis_url, IO_QUEUE) == 1
    assert queued(machine_redis_url, GPU_QUEUE) == 0  # sent again, not analysed again
    with wired.sessions() as s:
        archive = s.scalars(select(Delivery).where(Delivery.destination == "archive")).one()
        assert (archive.state, archive.attempts) == (DeliveryState.PENDING, 0)
    assert actions_of(wired, job_id)[0][4] == "re-sent 1 deliveries"


def test_only_an_admin_re_analyses_and_says_why(wired: Node, machine_redis_url: str) -> None:
    job_id = job_id_of(wired, "lung-nodules")
    url = f"/api/jobs/{job_id}/reanalyse"
    reason = {"reason": "model 1.1 fixes false positives near the hilum"}
    for role in (Role.VIEWER, Role.OPERATOR):
        response = wired.as_role(role).post(url, json=reason)
        assert response.status_code == 403, role
    admin = wired.as_role(Role.ADMIN)
    assert admin.post(url).status_code == 422  # no reason
    assert admin.post(url, json={"reason": "   "}).status_code == 422
    with wired.sessions() as s:
        assert s.get_one(Job, job_id).state is JobState.SUCCEEDED

    response = admin.post(url, json=reason)
    assert response.status_code == 202, response.text
    assert response.json() == {"id": job_id, "state": "queued"}
    assert queued(machine_redis_url, GPU_QUEUE) == 1
    assert actions_of(wired, job_id) == [
        ("reanalyse", "token:admin-script", "admin", reason["reason"], "analysed again")
    ]
    record = wired.actions[-1]
    assert (record.action, record.actor, record.actor_role, record.reason, record.succeeded) == (
        "job_reanalyse",
        "token:admin-script",
        "admin",
        reason["reason"],
        True,
    )
    # A job still running is not re-analysed.
    running = job_id_of(wired, "midline")
    response = admin.post(f"/api/jobs/{running}/reanalyse", json=reason)
    assert response.status_code == 409
    assert "only a finished job" in response.json()["detail"]


def test_a_signed_in_admin_re_analyses_with_the_csrf_token(wired: Node) -> None:
    client, csrf = wired.signed_in(Role.ADMIN)
    job_id = job_id_of(wired, "bleed")
    url = f"/api/jobs/{job_id}/reanalyse"
    assert client.post(url, json={"reason": "new model"}).status_code == 403
    response = client.post(url, json={"reason": "new model"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 202, response.text
    assert actions_of(wired, job_id)[0][:3] == ("reanalyse", "admin", "admin")
