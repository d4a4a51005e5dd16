"""Critical findings told by HL7 v2.5.1 ORU^R01 over MLLP, against a real MLLP listener
(the ``hl7`` package's asyncio server answering real ACKs), through the outbox: an AA
delivers, an AE or no answer is a failed attempt retried with backoff, and a listener
that stays down ends in the dead letter. Also: the ledger's CriticalFinding rows."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from node.db.findings import CriticalFinding
from node.db.migrate import upgrade_to_head
from node.db.models import Delivery, DeliveryState, Job, JobState
from node.db.session import SessionFactory, make_engine, make_session_factory
from node.delivery.deliver import deliver_due
from node.delivery.destinations import Hl7Destination
from node.delivery.outbox import Outbox
from node.jobs.ledger import JobLedger
from node.settings import Settings
from tests.critical_peers import critical_job, mllp_listener, source_series
from tests.orthanc import free_port
from tests.pki import make_pki


def make_settings(tmp_path: Path, database_url: str | None, port: int, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        ae_title="AINODE_CRIT",
        destinations=[
            Hl7Destination(
                name="worklist", mllp=f"127.0.0.1:{port}", timeout_seconds=2,
                receiving_application="RIS", receiving_facility="RADIOLOGY",
            )
        ],
        **{"delivery_attempts": 3, **extra},
        delivery_backoff_seconds=0.2,
        delivery_backoff_max_seconds=0.4,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def sessions_for(settings: Settings) -> Iterator[SessionFactory]:
    engine = make_engine(settings)
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


def deliver_until_settled(
    settings: Settings, sessions: SessionFactory, job_id: int, limit: float = 30
) -> JobState:
    """Delivery passes, each when the outbox says the next is due, until the job settles."""
    outbox, ledger = Outbox(sessions, settings), JobLedger(sessions)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        wait = deliver_due(job_id, settings, outbox, ledger)
        if wait is None:
            state = ledger.state_of(job_id)
            assert state is not None
            return state
        time.sleep(min(wait, 1.0))
    raise AssertionError(f"job {job_id} still delivering after {limit} s")


def delivery_row(sessions: SessionFactory) -> Delivery:
    with sessions() as session:
        row = session.scalars(select(Delivery)).one()
        session.expunge(row)
        return row


def test_an_oru_r01_acknowledged_aa_is_delivered(tmp_path: Path, database_url: str | None) -> None:
    with mllp_listener("AA") as listener:
        settings = make_settings(tmp_path, database_url, listener.port)
        for sessions in sessions_for(settings):
            job_id, kos = critical_job(sessions, settings)
            assert deliver_until_settled(settings, sessions, job_id) is JobState.SUCCEEDED
            row = delivery_row(sessions)
    assert row.state is DeliveryState.DELIVERED and row.attempts == 1
    assert len(listener.received) == 1
    message = listener.received[0]
    msh = message.segment("MSH")
    assert str(msh(3)) == "AINODE_CRIT" and str(msh(5)) == "RIS" and str(msh(6)) == "RADIOLOGY"
    assert str(msh(9)) == "ORU^R01^ORU_R01" and str(msh(12)) == "2.5.1"
    pid = message.segment("PID")
    assert str(pid(3)) == "CRIT-1" and str(pid(5)) == "Doe^Jane"
    obr = message.segment("OBR")
    assert str(obr(2)) == str(obr(3)) == "ACC0001"  # the accession as placer and filler
    assert str(obr(25)) == "P" and str(obr(27)) == "^^^^^S"  # preliminary, stat
    assert str(message.segment("TQ1")(9)) == "S^Stat^HL70485"
    finding, study = message.segments("OBX")
    assert str(finding(2)) == "NM" and str(finding(3)) == "27925004^Nodule^SCT"
    assert float(str(finding(5))) == pytest.approx(0.97)
    assert str(finding(7)) == "<0.9" and str(finding(8)) == "AA" and str(finding(11)) == "P"
    assert str(study(3)) == "110180^Study Instance UID^DCM"
    assert str(study(5)) == str(kos.StudyInstanceUID)
    assert "urgency STAT" in str(message.segment("NTE")(3))


def test_mllp_inside_tls_is_delivered_to_a_listener_the_ca_vouches_for(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    with mllp_listener("AA", tls=server) as listener:
        for ca, expected in ((pki.ca, JobState.SUCCEEDED), (pki.other_ca, JobState.FAILED)):
            data = tmp_path / ca.stem
            settings = make_settings(data, None, listener.port, delivery_attempts=1)
            worklist = settings.destinations[0].model_copy(update={"tls": True, "tls_ca": ca})
            settings = settings.model_copy(update={"destinations": [worklist]})
            for sessions in sessions_for(settings):
                job_id, _ = critical_job(sessions, settings)
                assert deliver_until_settled(settings, sessions, job_id) is expected
                row = delivery_row(sessions)
            if expected is JobState.FAILED:
                assert "CERTIFICATE_VERIFY_FAILED" in row.last_error
    assert len(listener.received) == 1  # only over the connection the node trusted


def test_delimiters_in_patient_data_reach_the_listener_escaped(tmp_path: Path) -> None:
    datasets = source_series(patient_name="O|Neil&Co^Ann~Marie^^Dr^Jr", patient_id="ID|7&8")
    with mllp_listener("AA") as listener:
        settings = make_settings(tmp_path, None, listener.port)
        for sessions in sessions_for(settings):
            job_id, _ = critical_job(sessions, settings, datasets)
            assert deliver_until_settled(settings, sessions, job_id) is JobState.SUCCEEDED
    message = listener.received[0]
    pid = message.segment("PID")
    assert message.unescape(str(pid(3))) == "ID|7&8"
    family, given, middle, suffix, prefix = (str(c) for c in pid(5)[0])
    assert message.unescape(family) == "O|Neil&Co" and message.unescape(given) == "Ann~Marie"
    assert (middle, suffix, prefix) == ("", "Jr", "Dr")  # XPN orders suffix before prefix


def test_a_message_answered_ae_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    with mllp_listener("AE") as listener:
        settings = make_settings(tmp_path, None, listener.port)
        for sessions in sessions_for(settings):
            job_id, _ = critical_job(sessions, settings)
            state = deliver_until_settled(settings, sessions, job_id)
            row = delivery_row(sessions)
    assert state is JobState.FAILED
    assert row.state is DeliveryState.DEAD and row.attempts == 3
    assert "refused the message (AE)" in row.last_error
    # The same message each time: one control ID, so the receiver can tell a retry.
    assert len(listener.received) == 3
    assert len({str(m.segment("MSH")(10)) for m in listener.received}) == 1


def test_a_listener_that_is_down_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None, free_port())  # nothing listens there
    for sessions in sessions_for(settings):
        job_id, _ = critical_job(sessions, settings)
        state = deliver_until_settled(settings, sessions, job_id)
        row = delivery_row(sessions)
        with sessions() as session:
            job_error = session.get_one(Job, job_id).error
    assert state is JobState.FAILED and row.state is DeliveryState.DEAD and row.attempts == 3
    assert "cannot connect" in row.last_error
    assert "dead-lettered" in job_error and "worklist" in job_error


def test_a_listener_that_never_answers_fails_the_attempt_after_the_timeout(tmp_path: Path) -> None:
    with mllp_listener(None) as listener:
        settings = make_settings(tmp_path, None, listener.port)
        for sessions in sessions_for(settings):
            job_id, _ = critical_job(sessions, settings)
            began = time.monotonic()
            deliver_due(job_id, settings, Outbox(sessions, settings), JobLedger(sessions))
            took = time.monotonic() - began
            row = delivery_row(sessions)
    assert listener.arrived.is_set()
    assert row.state is DeliveryState.PENDING and row.attempts == 1
    assert "no acknowledgement within 2 s" in row.last_error
    assert 2 <= took < 10


def test_the_ledger_records_one_critical_finding_per_fired_rule(
    tmp_path: Path, database_url: str | None
) -> None:
    settings = make_settings(tmp_path, database_url, free_port())
    for sessions in sessions_for(settings):
        job_id, _ = critical_job(sessions, settings)
        with sessions() as session:
            rows = session.scalars(select(CriticalFinding)).all()
            assert [(r.job_pk, r.output, r.code_value, r.code_scheme) for r in rows] == [
                (job_id, "nodule", "27925004", "SCT")
            ]
            row = rows[0]
            assert (row.value, row.unit, row.threshold, row.urgency) == (0.97, "", 0.9, "STAT")
            assert row.text.startswith("nodule (Nodule): probability 0.970")
            assert row.acknowledged_at is None and row.detected_at is not None
        # A re-run whose findings no longer fire removes the row.
        JobLedger(sessions).analyzed(job_id, {"model": "critical-classifier"}, [], [])
        with sessions() as session:
            assert session.scalars(select(CriticalFinding)).all() == []
