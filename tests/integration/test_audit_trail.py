"""The audit trail: rows in the database (SQLite and PostgreSQL), ``GET /api/audit``, and
DICOM audit messages arriving at a real syslog collector (Debian's rsyslogd) over UDP,
TCP and TLS. A collector that is down or stalled must not make ``record`` raise or wait.
"""

from __future__ import annotations

import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import func, select

from node.audit.dicom_message import AuditSource
from node.audit.events import AuditKind, EventOutcome, OperatorAction, SignIn, StudyRef
from node.audit.syslog import BOM, SyslogAddress, SyslogEmitter, SyslogSender
from node.audit.trail import AuditTrail
from node.db.migrate import upgrade_to_head
from node.db.models import AuditEvent
from node.db.session import SessionFactory, make_engine, make_session_factory
from node.settings import Settings
from node.web.routes import audit as audit_routes
from tests.node_process import wait_for
from tests.orthanc import free_port
from tests.pki import Pki, make_pki
from tests.syslog_server import Rsyslog, start_rsyslog

SCHEMA = Path(__file__).resolve().parents[1] / "dicom_audit_message.rnc"
CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
STUDY = StudyRef("1.2.826.0.1.3680043.2.1125.1", "PAT-1", "Doe^Jane", "ACC-1", "CT chest")


def _sessions(settings: Settings) -> SessionFactory:
    engine = make_engine(settings)
    upgrade_to_head(engine)
    return make_session_factory(engine)


@pytest.fixture
def trail_db(database_url: str, tmp_path: Path) -> Iterator[tuple[AuditTrail, SessionFactory]]:
    """A trail without syslog over SQLite, then PostgreSQL (``database_url``)."""
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    sessions = _sessions(settings)
    trail = AuditTrail.from_settings(settings, sessions)
    yield trail, sessions
    trail.close()


def _rows(sessions: SessionFactory) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_every_kind_becomes_a_row(trail_db: tuple[AuditTrail, SessionFactory]) -> None:
    trail, sessions = trail_db
    trail.application_started("ainode serve")
    trail.association_ended(
        "PACS", "AINODE", "127.0.0.1", tls_identity="CN=PACS,O=Hospital", instances=3
    )
    trail.association_ended(
        "INTRUDER", "AINODE", "10.9.9.9",
        outcome=EventOutcome.SERIOUS_FAILURE, reason="calling AE title not allowed",
    )  # fmt: skip
    trail.instances_received("PACS", "127.0.0.1", STUDY, {CT: 3}, tls_identity="CN=PACS")
    trail.results_sent(
        "archive", "ORTHANC@127.0.0.1:4242", STUDY, {SEG: ["1.2.3.4"]},
        destination_ae_title="ORTHANC", destination_host="127.0.0.1", job_id=7,
    )  # fmt: skip
    trail.commitment_received(
        "archive", "ORTHANC", "1.2.3.99", STUDY, {SEG: ["1.2.3.4"]}, {},
        archive_host="127.0.0.1",
    )  # fmt: skip
    trail.sign_in("alice", "192.0.2.10", succeeded=True, role="admin")
    trail.sign_in("mallory", "192.0.2.66", succeeded=False, reason="wrong password")
    trail.operator_action(
        "alice", "retry job", "/api/jobs/7/retry", "archive was down",
        role="operator", client_host="192.0.2.10",
    )  # fmt: skip
    trail.sign_out("alice", "192.0.2.10", by_user=False)
    trail.application_stopped("ainode serve")

    rows = _rows(sessions)
    assert [r.kind for r in rows] == [
        AuditKind.APPLICATION_START, AuditKind.ASSOCIATION, AuditKind.ASSOCIATION,
        AuditKind.INSTANCES_RECEIVED, AuditKind.RESULTS_SENT, AuditKind.COMMITMENT_RECEIVED,
        AuditKind.SIGN_IN, AuditKind.SIGN_IN, AuditKind.OPERATOR_ACTION, AuditKind.SIGN_OUT,
        AuditKind.APPLICATION_STOP,
    ]  # fmt: skip
    assert trail.counts.recorded == 11 and trail.counts.record_failures == 0
    accepted, refused, received, sent, committed, signed_in, failed, action = rows[1:9]
    assert (accepted.actor, accepted.actor_role, accepted.peer_address) == (
        "PACS",
        "calling AE",
        "127.0.0.1",
    )
    assert accepted.detail["called_ae_title"] == "AINODE"
    assert accepted.detail["tls_identity"] == "CN=PACS,O=Hospital"
    assert accepted.detail["instances"] == 3 and accepted.outcome == 0
    assert refused.outcome == 8 and refused.detail["reason"] == "calling AE title not allowed"
    assert received.detail["study"]["study_instance_uid"] == STUDY.study_instance_uid
    assert received.detail["sop_classes"] == {CT: 3}
    assert sent.detail["instances"] == {SEG: ["1.2.3.4"]} and sent.detail["job_id"] == 7
    assert sent.detail["destination"] == "archive" and sent.actor == "AINODE"
    assert committed.detail["transaction_uid"] == "1.2.3.99" and committed.outcome == 0
    assert (signed_in.actor, signed_in.actor_role, signed_in.outcome) == ("alice", "admin", 0)
    assert (failed.actor, failed.outcome, failed.peer_address) == ("mallory", 4, "192.0.2.66")
    assert failed.detail["reason"] == "wrong password"
    assert (action.actor, action.actor_role) == ("alice", "operator")
    assert action.detail["target"] == "/api/jobs/7/retry"
    assert action.detail["reason"] == "archive was down"
    occurred = [r.occurred_at for r in rows]
    assert occurred == sorted(occurred)


def test_api_lists_newest_first_with_filters(trail_db: tuple[AuditTrail, SessionFactory]) -> None:
    trail, sessions = trail_db
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for minute, user, outcome in (
        (0, "alice", EventOutcome.SUCCESS),
        (1, "bob", EventOutcome.MINOR_FAILURE),
        (2, "alice", EventOutcome.SUCCESS),
    ):
        reason = "" if outcome is EventOutcome.SUCCESS else "wrong password"
        event = SignIn(user=user, client_host="192.0.2.1", outcome=outcome, reason=reason)
        trail.record(event, occurred_at=start + timedelta(minutes=minute))
    action = OperatorAction(user="alice", action="retry job", target="/api/jobs/1/retry")
    trail.record(action, occurred_at=start + timedelta(minutes=3))

    app = FastAPI()
    app.state.context = SimpleNamespace(sessions=sessions)  # all that SessionDep reads
    app.include_router(audit_routes.router, prefix="/api")
    with TestClient(app) as client:
        rows = client.get("/api/audit").json()
        assert [r["kind"] for r in rows] == ["operator_action", "sign_in", "sign_in", "sign_in"]
        assert [r["actor"] for r in rows] == ["alice", "alice", "bob", "alice"]
        bob = rows[2]
        assert (bob["outcome"], bob["outcome_text"]) == (4, "minor failure")
        assert datetime.fromisoformat(bob["occurred_at"]) == start + timedelta(minutes=1)
        assert bob["detail"]["reason"] == "wrong password" and bob["peer_address"] == "192.0.2.1"

        alice = client.get("/api/audit", params={"kind": "sign_in", "actor": "alice"}).json()
        assert [datetime.fromisoformat(r["occurred_at"]).minute for r in alice] == [2, 0]
        assert len(client.get("/api/audit", params={"since": "2026-01-01T00:01:00"}).json()) == 3
        offset = client.get("/api/audit", params={"since": "2026-01-01T01:01:00+01:00"})
        assert len(offset.json()) == 3
        assert len(client.get("/api/audit", params={"limit": 2}).json()) == 2
        both = client.get("/api/audit", params=[("kind", "sign_in"), ("kind", "operator_action")])
        assert len(both.json()) == 4
        assert client.get("/api/audit", params={"kind": "nonsense"}).status_code == 422


# ---- syslog: a real rsyslogd ------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("audit-pki"))


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Rsyslog]:
    server = start_rsyslog(tmp_path_factory.mktemp("rsyslog"), pki)
    yield server
    server.stop()


def _syslog_trail(tmp_path: Path, **settings: object) -> AuditTrail:
    values = Settings(data_dir=tmp_path, ae_title="AINODE", **settings)  # type: ignore[arg-type]
    return AuditTrail.from_settings(values, _sessions(values))


def _schema() -> etree.RelaxNG:
    return etree.RelaxNG.from_rnc_string(SCHEMA.read_text())


def _audit_xml(message: bytes) -> ET.Element:
    assert message.startswith(BOM)
    document = etree.fromstring(message[len(BOM) :])
    schema = _schema()
    assert schema.validate(document), schema.error_log
    return ET.fromstring(message[len(BOM) :])


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_messages_reach_rsyslog(transport: str, rsyslog: Rsyslog, pki: Pki, tmp_path: Path) -> None:
    tls = (
        {"audit_syslog_ca": pki.ca, "audit_syslog_cert": pki.client_cert,
         "audit_syslog_key": pki.client_key}
        if transport == "tls" else {}
    )  # fmt: skip
    trail = _syslog_trail(
        tmp_path, audit_syslog=rsyslog.url(transport), audit_source_id="AINODE-TEST", **tls
    )
    user = f"user-{uuid.uuid4().hex[:8]}"
    try:
        trail.sign_in(user, "192.0.2.7", succeeded=False, reason="wrong password")
        trail.instances_received(user, "127.0.0.1", STUDY, {CT: 2})
        failed_sign_in = rsyslog.wait_for_message(f'UserID="{user}"'.encode())
        received = rsyslog.wait_for_message(f'AETITLES={user}"'.encode())
    finally:
        trail.close()
    assert failed_sign_in.input == transport
    assert (failed_sign_in.version, failed_sign_in.app_name) == (1, "ainode")
    assert failed_sign_in.msgid == "DICOM+RFC3881" and failed_sign_in.structured_data == "-"
    assert (failed_sign_in.facility, failed_sign_in.severity) == (10, 4)  # authpriv, warning
    assert (received.facility, received.severity) == (10, 5)  # a success: notice
    assert failed_sign_in.hostname == socket.gethostname()
    assert datetime.fromisoformat(failed_sign_in.timestamp).tzinfo is not None

    sign_in = _audit_xml(failed_sign_in.msg)
    event = sign_in.find("EventIdentification")
    assert event is not None and event.get("EventOutcomeIndicator") == "4"
    assert event.find("EventID").get("csd-code") == "110114"  # type: ignore[union-attr]
    assert event.find("EventTypeCode").get("csd-code") == "110122"  # type: ignore[union-attr]
    assert event.findtext("EventOutcomeDescription") == "wrong password"
    source = sign_in.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "AINODE-TEST"

    transfer = _audit_xml(received.msg)
    assert transfer.find("EventIdentification/EventID").get("csd-code") == "110104"  # type: ignore[union-attr]
    study = transfer.find("ParticipantObjectIdentification")
    assert study is not None and study.get("ParticipantObjectID") == STUDY.study_instance_uid
    assert study.find("ParticipantObjectDescription/SOPClass").attrib == {  # type: ignore[union-attr]
        "UID": CT, "NumberOfInstances": "2"
    }  # fmt: skip


def test_accepted_associations_go_to_syslog_only_when_asked(
    rsyslog: Rsyslog, tmp_path: Path
) -> None:
    quiet = _syslog_trail(tmp_path / "quiet", audit_syslog=rsyslog.url("tcp"))
    loud = _syslog_trail(
        tmp_path / "loud", audit_syslog=rsyslog.url("tcp"), audit_syslog_accepted_associations=True
    )
    accepted, refused, asked = (f"AE{uuid.uuid4().hex[:10].upper()}" for _ in range(3))
    try:
        quiet.association_ended(accepted, "AINODE", "127.0.0.1")
        quiet.association_ended(
            refused, "AINODE", "127.0.0.1",
            outcome=EventOutcome.SERIOUS_FAILURE, reason="calling AE title not allowed",
        )  # fmt: skip
        loud.association_ended(asked, "AINODE", "127.0.0.1")
        refusal = _audit_xml(rsyslog.wait_for_message(f"AETITLES={refused}".encode()).msg)
        rsyslog.wait_for_message(f"AETITLES={asked}".encode())
    finally:
        quiet.close()
        loud.close()
    # The quiet trail's messages go out in order: the refusal arrived, the accepted one
    # before it was never sent.
    assert not [m for m in rsyslog.messages() if f"AETITLES={accepted}".encode() in m.msg]
    assert quiet.counts.recorded == 2  # both are rows all the same
    identification = refusal.find("EventIdentification")
    assert identification is not None and identification.get("EventOutcomeIndicator") == "8"
    assert identification.find("EventID").get("csd-code") == "110113"  # type: ignore[union-attr]
    assert identification.find("EventTypeCode").get("csd-code") == "110126"  # type: ignore[union-attr]


def test_a_collector_the_ca_did_not_sign_gets_nothing(
    rsyslog: Rsyslog, pki: Pki, tmp_path: Path
) -> None:
    trail = _syslog_trail(
        tmp_path, audit_syslog=rsyslog.url("tls"), audit_syslog_ca=pki.other_ca,
        audit_syslog_cert=pki.client_cert, audit_syslog_key=pki.client_key,
    )  # fmt: skip
    (emitter,) = trail.emitters
    assert isinstance(emitter, SyslogEmitter)
    user = f"user-{uuid.uuid4().hex[:8]}"
    trail.sign_in(user, "192.0.2.7", succeeded=True)
    wait_for(lambda: emitter.counts.send_failures >= 1, 30, 0.1, "a refused TLS handshake")
    trail.close(timeout=0.5)
    assert trail.counts.recorded == 1  # the row is there all the same
    assert emitter.counts.sent == 0 and emitter.counts.dropped == 1
    assert not [m for m in rsyslog.messages() if user.encode() in m.msg]


def test_an_unreachable_collector_neither_raises_nor_blocks(tmp_path: Path) -> None:
    trail = _syslog_trail(tmp_path, audit_syslog=f"tcp://127.0.0.1:{free_port()}")
    (emitter,) = trail.emitters
    assert isinstance(emitter, SyslogEmitter)
    for number in range(20):
        trail.sign_in(f"user{number}", "192.0.2.7", succeeded=True)
    assert trail.counts.recorded == 20
    wait_for(lambda: emitter.counts.send_failures >= 1, 30, 0.1, "a refused connection")
    trail.close(timeout=0.5)
    assert emitter.counts.sent == 0 and emitter.counts.dropped == 20


def test_a_stalled_collector_fills_the_queue_not_the_caller(tmp_path: Path) -> None:
    # A collector that accepts connections and never reads: the emitter's thread ends up
    # blocked in a send, its queue fills, and further messages are dropped, not waited on.
    stalled = socket.create_server(("127.0.0.1", 0))
    port = stalled.getsockname()[1]
    settings = Settings(data_dir=tmp_path)
    sessions = _sessions(settings)
    sender = SyslogSender(SyslogAddress.parse(f"tcp://127.0.0.1:{port}"), timeout=60)
    emitter = SyslogEmitter(sender, hostname="test", queue_size=8)
    source = AuditSource("AINODE", "AINODE", "test")
    trail = AuditTrail(sessions, source, [emitter])
    reason = "x" * 60_000  # large messages fill the socket buffers quickly
    try:
        events = 0
        while emitter.counts.dropped == 0:
            trail.operator_action("alice", "retry job", "/api/jobs/1/retry", reason)
            events += 1
            assert events < 10_000, "the queue never filled"
        assert trail.counts.recorded == events and trail.counts.record_failures == 0
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(AuditEvent)) == events
    finally:
        trail.close(timeout=0.5)  # unblocks the stuck send
        stalled.close()
    assert not emitter.running
    assert emitter.counts.sent + emitter.counts.dropped == events
