"""The audit trail wired into the node's flows, with real peers: the Storage SCP's
associations (DCMTK's storescu), results sent to and committed by a real Orthanc, a
destination that stays down, and the web side's sign-ins and operator actions (the
real app, its real sign-in form). Rows are read back from the database, and
``GET /api/audit`` is for admins only.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import select

from node.acceptor.record import AssociationRecord
from node.audit.events import AuditKind, EventOutcome
from node.audit.receiving import AssociationAudit
from node.audit.results import ResultsAudit
from node.audit.trail import AuditTrail
from node.audit.web_actions import action_recorder
from node.auth.roles import Role
from node.db.auditing import AuditEvent
from node.db.migrate import upgrade_to_head
from node.db.models import Job, JobState, Patient, ResultKind, Series, Study
from node.db.session import SessionFactory, make_engine, make_session_factory, transaction
from node.delivery.deliver import deliver_due
from node.delivery.outbox import Outbox
from node.delivery.reports import CommitmentReports
from node.jobs.ledger import JobLedger, NewResult
from node.scp import StorageSCP
from node.settings import Settings
from node.web import create_app
from tests.factories import make_ct_series, write_series
from tests.node_process import wait_for
from tests.orthanc import free_port, start_orthanc
from tests.web_node import BASE_URL, PASSWORD, add_principals, make_retry, seed

CT = "1.2.840.10008.5.1.4.1.1.2"


def _sessions(settings: Settings) -> SessionFactory:
    engine = make_engine(settings)
    upgrade_to_head(engine)
    return make_session_factory(engine)


def rows(sessions: SessionFactory, *kinds: AuditKind) -> list[AuditEvent]:
    with sessions() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if kinds:
            query = query.where(AuditEvent.kind.in_(kinds))
        return list(session.scalars(query))


def ct_files(directory: Path, patient_id: str, slices: int = 2) -> list[Path]:
    """A small CT series of its own patient and study."""
    hu = np.zeros((slices, 16, 16))
    return write_series(make_ct_series(hu, patient_id=patient_id), directory / patient_id)


def storescu(port: int, calling_aet: str, files: list[Path]) -> int:
    result = subprocess.run(
        ["storescu", "-aet", calling_aet, "-aec", "AINODE", "127.0.0.1", str(port),
         *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    return result.returncode


# ---- associations ----------------------------------------------------------------------


def test_each_association_and_each_study_it_stored_is_a_row(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "node", dicom_port=free_port(), dicom_bind="127.0.0.1",
        allowed_calling_aets=["MODALITY"],
    )  # fmt: skip
    sessions = _sessions(settings)
    trail = AuditTrail.from_settings(settings, sessions)
    logged: list[AssociationRecord] = []
    scp = StorageSCP(settings, sessions, on_association=AssociationAudit(trail, then=logged.append))
    first, second = ct_files(tmp_path, "PAT-A", 3), ct_files(tmp_path, "PAT-B", 2)
    scp.start()
    try:
        with socket.create_connection(("127.0.0.1", settings.dicom_port)):
            pass  # a port probe: no association request at all
        assert storescu(settings.dicom_port, "MODALITY", first + second) == 0
        assert storescu(settings.dicom_port, "INTRUDER", first[:1]) != 0
        wait_for(lambda: len(logged) == 3, 30, 0.1, "three connections ended")
    finally:
        scp.stop()  # waits for the connections' threads, so every row is written
        trail.close()

    associations = rows(sessions, AuditKind.ASSOCIATION)
    assert len(associations) == 2, "the probe is no association"
    accepted, refused = sorted(associations, key=lambda r: r.outcome)
    assert (accepted.actor, accepted.actor_role, accepted.peer_address) == (
        "MODALITY", "calling AE", "127.0.0.1",
    )  # fmt: skip
    assert accepted.outcome == EventOutcome.SUCCESS
    assert accepted.detail["called_ae_title"] == "AINODE"
    assert accepted.detail["instances"] == 5
    assert refused.actor == "INTRUDER" and refused.outcome == EventOutcome.SERIOUS_FAILURE
    assert refused.detail["reason"].startswith("rejected")
    received = rows(sessions, AuditKind.INSTANCES_RECEIVED)
    studies = {r.detail["study"]["patient_id"]: r for r in received}
    assert set(studies) == {"PAT-A", "PAT-B"}
    assert studies["PAT-A"].detail["sop_classes"] == {CT: 3}
    assert studies["PAT-B"].detail["sop_classes"] == {CT: 2}
    assert studies["PAT-A"].actor == "MODALITY" and studies["PAT-A"].peer_address == "127.0.0.1"
    assert studies["PAT-A"].detail["study"]["patient_name"] == "Phantom^Test"


def test_a_failed_tls_handshake_is_a_security_alert(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    sessions = _sessions(settings)
    trail = AuditTrail.from_settings(settings, sessions)
    record = AssociationRecord(address="192.0.2.5", port=40100)
    record.outcome = "TLS handshake failed: [SSL: WRONG_VERSION_NUMBER] wrong version number"
    AssociationAudit(trail)(record)
    (alert,) = rows(sessions)
    assert alert.kind is AuditKind.SECURITY_ALERT and alert.outcome == EventOutcome.MINOR_FAILURE
    assert alert.peer_address == "192.0.2.5"
    assert alert.detail["alert_type"] == "node_authentication"
    assert alert.detail["subject"] == "192.0.2.5" and alert.detail["subject_is_node"] is True
    assert "wrong version number" in alert.detail["description"]


# ---- results sent and committed ---------------------------------------------------------


class DeliveryMessages:
    """Where the commitment reports ask for a job's next pass (the broker's stand-in)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, float]] = []

    def send_delivery(self, job_id: int, countdown: float = 0.0) -> None:
        self.sent.append((job_id, countdown))


def analysed_job(
    settings: Settings, sessions: SessionFactory, tmp_path: Path
) -> tuple[int, list[str]]:
    """A job of a study of patient PAT-R whose "results" (two CT objects) are on disk and
    planned for every destination; its id and the results' SOP Instance UIDs."""
    with transaction(sessions) as session:
        study = Study(
            study_instance_uid="1.2.826.0.1.3680043.10.9.1",
            patient=Patient(patient_id="PAT-R", patient_name="Roe^Rita"),
            accession_number="ACC-R",
        )
        job = Job(
            series=Series(series_instance_uid="1.2.826.0.1.3680043.10.9.1.1", study=study),
            model_name="seg-model",
            model_version="1.0",
        )
        session.add(job)
        session.flush()
        job_id = job.id
    results = []
    for path in ct_files(tmp_path / "made", "RESULTS", 2):
        ds = dcmread(path, stop_before_pixels=True)
        relative = Path(f"{job_id}/{path.name}")
        (settings.results_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (settings.results_dir / relative).write_bytes(path.read_bytes())
        results.append(NewResult(ResultKind.SEG, CT, str(ds.SOPInstanceUID), str(relative)))
    JobLedger(sessions).analyzed(job_id, {}, results, settings.all_destinations)
    return job_id, [r.sop_instance_uid for r in results]


def test_results_stored_and_committed_by_orthanc_are_rows(tmp_path: Path) -> None:
    node_port = free_port()
    archive = start_orthanc(tmp_path / "archive", node_port=node_port)
    settings = Settings(
        data_dir=tmp_path / "node", dicom_port=node_port, dicom_bind="127.0.0.1",
        destinations=[{"name": "pacs", "dicom": archive.destination, "storage_commitment": True}],
    )  # fmt: skip
    sessions = _sessions(settings)
    trail = AuditTrail.from_settings(settings, sessions)
    audit = ResultsAudit(trail, sessions, settings)
    outbox, ledger = Outbox(sessions, settings), JobLedger(sessions)
    reports = CommitmentReports(outbox, ledger, DeliveryMessages(), audit)
    scp = StorageSCP(settings, sessions, on_commitment=reports.record)
    job_id, uids = analysed_job(settings, sessions, tmp_path)
    scp.start()
    try:
        deliver_due(job_id, settings, outbox, ledger, audit)
        (committed,) = wait_for(
            lambda: rows(sessions, AuditKind.COMMITMENT_RECEIVED), 60, 0.2, "Orthanc's report"
        )
        (sent,) = rows(sessions, AuditKind.RESULTS_SENT)
    finally:
        scp.stop()
        trail.close()
        archive.stop()
    assert sent.outcome == EventOutcome.SUCCESS and sent.id < committed.id
    assert (sent.actor, sent.actor_role, sent.peer_address) == ("AINODE", "node", "127.0.0.1")
    assert sent.detail["destination"] == "pacs"
    assert sent.detail["destination_address"] == archive.destination
    assert sent.detail["destination_ae_title"] == "ORTHANC"
    assert sent.detail["job_id"] == job_id
    assert sorted(sent.detail["instances"][CT]) == sorted(uids)
    assert sent.detail["study"]["patient_id"] == "PAT-R"
    assert sent.detail["study"]["accession_number"] == "ACC-R"
    assert committed.outcome == EventOutcome.SUCCESS
    assert (committed.actor, committed.actor_role) == ("ORTHANC", "archive")
    assert committed.detail["destination"] == "pacs"
    assert sorted(committed.detail["committed"][CT]) == sorted(uids)
    assert committed.detail["failed"] == {}
    assert committed.detail["transaction_uid"].startswith("2.25.")
    with sessions() as session:
        assert session.get_one(Job, job_id).state is JobState.SUCCEEDED


def test_a_failed_try_is_minor_and_the_dead_letter_serious(tmp_path: Path) -> None:
    down = f"ORTHANC@127.0.0.1:{free_port()}"  # nobody listens there
    settings = Settings(
        data_dir=tmp_path, destinations=[{"name": "pacs", "dicom": down}],
        delivery_attempts=2, delivery_backoff_seconds=0.1, delivery_backoff_max_seconds=0.2,
    )  # fmt: skip
    sessions = _sessions(settings)
    trail = AuditTrail.from_settings(settings, sessions)
    audit = ResultsAudit(trail, sessions, settings)
    outbox, ledger = Outbox(sessions, settings), JobLedger(sessions)
    job_id, uids = analysed_job(settings, sessions, tmp_path)

    def failed_tries() -> list[AuditEvent]:
        deliver_due(job_id, settings, outbox, ledger, audit)  # a pass whenever one is due
        found = rows(sessions, AuditKind.RESULTS_SENT)
        return found if len(found) == 2 else []

    first, last = wait_for(failed_tries, 30, 0.1, "two failed tries")
    trail.close()
    assert first.outcome == EventOutcome.MINOR_FAILURE  # to be tried again
    assert last.outcome == EventOutcome.SERIOUS_FAILURE  # dead-lettered
    for row in (first, last):
        assert "not established" in row.detail["reason"] or "refused" in row.detail["reason"]
        assert sorted(row.detail["instances"][CT]) == sorted(uids)
        assert row.detail["destination_address"] == down
    with sessions() as session:
        assert session.get_one(Job, job_id).state is JobState.FAILED


# ---- the web side ------------------------------------------------------------------------


@pytest.fixture
def web(database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, SessionFactory, dict]]:
    """The real app over a seeded database, its actions told to a real trail."""
    settings = Settings(data_dir=tmp_path, database_url=database_url, ae_title="AINODE_T")
    sessions = _sessions(settings)
    seed(sessions)
    tokens = add_principals(sessions)
    trail = AuditTrail.from_settings(settings, sessions)
    app = create_app(
        settings,
        sessions,
        health=lambda: {"database": True},
        retry_job=make_retry(sessions),
        record_action=action_recorder(trail),
    )
    with TestClient(app, base_url=BASE_URL) as client:
        yield client, sessions, tokens
    trail.close()


def _sign_in(client: TestClient, name: str, password: str) -> int:
    form = client.get("/signin")
    csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    data = {"name": name, "password": password, "csrf_token": csrf, "next": "/"}
    return client.post("/signin", data=data, follow_redirects=False).status_code


def test_sign_ins_and_operator_actions_are_rows_admins_read(
    web: tuple[TestClient, SessionFactory, dict],
) -> None:
    client, sessions, tokens = web
    assert _sign_in(client, "operator", "not the password") == 401
    assert _sign_in(client, "operator", PASSWORD) == 303
    csrf = client.get("/api/session").json()["csrf_token"]
    with sessions() as session:
        failed_job = session.scalars(select(Job.id).where(Job.state == JobState.FAILED)).first()
    headers = {"X-CSRF-Token": csrf}
    reason = {"reason": "the archive was down overnight"}
    assert client.post(f"/api/jobs/{failed_job}/retry", json=reason, headers=headers).is_success
    assert client.post(f"/api/jobs/{failed_job}/retry", headers=headers).status_code == 409
    assert client.post("/signout", headers=headers, follow_redirects=False).status_code == 303

    kinds = [r.kind for r in rows(sessions)]
    assert kinds == [
        AuditKind.SIGN_IN, AuditKind.SIGN_IN, AuditKind.OPERATOR_ACTION,
        AuditKind.OPERATOR_ACTION, AuditKind.SIGN_OUT,
    ]  # fmt: skip
    admin = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
    listed = client.get("/api/audit", headers=admin).json()
    wrong, signed_in, retried, refused, signed_out = reversed(listed)  # newest first
    assert (wrong["actor"], wrong["outcome_text"]) == ("operator", "minor failure")
    assert wrong["detail"]["reason"] == "wrong name or password"
    assert wrong["peer_address"] == "testclient"
    assert (signed_in["actor"], signed_in["actor_role"], signed_in["outcome"]) == (
        "operator", "operator", 0,
    )  # fmt: skip
    assert retried["detail"]["action"] == "job_retry" and retried["outcome"] == 0
    assert retried["detail"]["target"] == f"/api/jobs/{failed_job}/retry"
    assert retried["detail"]["reason"] == "the archive was down overnight"
    assert (retried["actor"], retried["actor_role"]) == ("operator", "operator")
    assert refused["outcome_text"] == "minor failure" and "refused" in refused["detail"]["reason"]
    assert signed_out["kind"] == "sign_out" and signed_out["actor"] == "operator"
    for role in (Role.OPERATOR, Role.VIEWER):
        bearer = {"Authorization": f"Bearer {tokens[role]}"}
        assert client.get("/api/audit", headers=bearer).status_code == 403
    assert client.get("/api/audit").status_code == 401  # signed out
