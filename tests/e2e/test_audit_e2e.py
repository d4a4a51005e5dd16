"""The audit trail of a running node, end to end, with real peers only.

``ainode serve`` (its worker child included) sends its DICOM audit messages over TLS to
a real rsyslogd (``tests.syslog_server``), accepted associations included. DCMTK's
storescu sends a study; both shipped models analyse it; the results go to an Orthanc
archive that commits them (storage commitment, its report on a new association to the
node) and to an "offsite" archive that stays down, so those deliveries fail, are
dead-lettered, and an operator retries them, saying why. People sign in through the
real form, once with a wrong password.

Then ``GET /api/audit`` (an admin's token) must list each of those events with who,
from where and how it ended, rsyslogd must have received each as a DICOM audit message
that validates against the PS3.15 A.5.1 schema, and, in Chromium, an admin sees the
audit trail card on the dashboard while a viewer does not.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from lxml import etree
from playwright.sync_api import ConsoleMessage, expect
from pydicom import dcmread

from tests.browser import POLLED, chromium_page, sign_in
from tests.factories import phantom_study
from tests.node_process import NodeProcess, node_environment, wait_for
from tests.orthanc import Orthanc, free_port, start_orthanc
from tests.pki import make_pki
from tests.syslog_server import BOM, Rsyslog, SyslogMessage, start_rsyslog

pytestmark = pytest.mark.e2e

SCHEMA = Path(__file__).resolve().parents[1] / "dicom_audit_message.rnc"
PASSWORD = "correct horse battery staple"
CT = "1.2.840.10008.5.1.4.1.1.2"
SOURCE_ID = "AINODE-E2E"
REASON = "offsite archive back after maintenance"
ACCOUNTS = {"auditor": "admin", "operator1": "operator", "watcher": "viewer"}


@dataclass
class AuditedNode:
    node: NodeProcess
    archive: Orthanc
    rsyslog: Rsyslog
    files: list[Path]
    jobs: list[dict]

    @property
    def study_uid(self) -> str:
        return str(dcmread(self.files[0], stop_before_pixels=True).StudyInstanceUID)

    def audit(self, **params: object) -> list[dict]:
        query = httpx.QueryParams({"limit": 1000, **params})
        return self.node.get(f"/api/audit?{query}")  # type: ignore[return-value]


def _add_account(env: dict[str, str], name: str, role: str) -> None:
    added = subprocess.run(
        [sys.executable, "-m", "node.cli", "users", "add", name, "--role", role],
        env={**env, "AINODE_LOG_LEVEL": "WARNING"}, input=PASSWORD + "\n",
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def _jobs_failed(node: NodeProcess) -> list[dict] | None:
    jobs: list[dict] = node.get("/api/jobs")  # type: ignore[assignment]
    return jobs if len(jobs) == 2 and all(j["state"] == "failed" for j in jobs) else None


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedNode]:
    """The node, its peers and one study analysed, delivered to the archive and
    dead-lettered offsite; stopped (if a test has not) at the end of the module."""
    root = tmp_path_factory.mktemp("audit-e2e")
    pki = make_pki(root / "pki")
    rsyslog = start_rsyslog(root / "rsyslog", pki)
    dicom_port = free_port()
    archive = start_orthanc(root / "archive", node_port=dicom_port)  # it reports to the node
    destinations = [
        {"name": "pacs", "dicom": archive.destination, "storage_commitment": True},
        {"name": "offsite", "dicom": f"OFFSITE@127.0.0.1:{free_port()}", "kinds": ["SR"]},
    ]
    env, _, http_port = node_environment(
        root / "node",
        dicom_port=str(dicom_port),
        destinations=json.dumps(destinations),
        delivery_attempts="2",
        delivery_backoff_seconds="0.2",
        delivery_backoff_max_seconds="0.4",
        audit_syslog=rsyslog.url("tls"),
        audit_syslog_ca=str(pki.ca),
        audit_syslog_cert=str(pki.client_cert),
        audit_syslog_key=str(pki.client_key),
        audit_syslog_accepted_associations="true",
        audit_source_id=SOURCE_ID,
    )
    node = NodeProcess(root / "node", dicom_port, http_port, env)
    try:
        for name, role in ACCOUNTS.items():
            _add_account(env, name, role)
        node.start()
        files = phantom_study(root, 801, slices=12)
        Orthanc.store_to(files, "127.0.0.1", dicom_port, "AINODE")  # storescu, as MODALITY
        jobs = wait_for(
            lambda: _jobs_failed(node), 240, what="both jobs delivered to pacs, dead offsite"
        )
        yield AuditedNode(node, archive, rsyslog, files, jobs)
    finally:
        node.stop()
        archive.stop()
        rsyslog.stop()


# ---- the dashboard ----------------------------------------------------------------------


def test_an_admin_sees_the_audit_card_and_a_viewer_does_not(audited: AuditedNode) -> None:
    url = audited.node.url
    with chromium_page() as page:
        violations: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                violations.append(message.text)

        page.on("console", on_console)
        sign_in(page, url, "auditor", PASSWORD)
        card = page.locator("#audit-card")
        expect(card).to_be_visible()
        sign_ins = page.locator('#audit tbody tr[data-kind="sign_in"]').filter(has_text="auditor")
        expect(sign_ins.first).to_contain_text("success", timeout=POLLED)
        expect(sign_ins.first).to_contain_text("admin")
        association = page.locator('#audit tbody tr[data-kind="association"]').filter(
            has_text="MODALITY"
        )
        expect(association.first).to_contain_text(f"{len(audited.files)} instances")
        expect(association.first).to_contain_text("127.0.0.1")

        page.select_option("#audit-filter", "association")
        others = page.locator('#audit tbody tr:not([data-kind="association"])')
        expect(others).to_have_count(0, timeout=POLLED)
        expect(association.first).to_be_visible()

        page.click("#signout")
        expect(page).to_have_url(url + "/signin?next=/")
        sign_in(page, url, "watcher", PASSWORD)
        expect(page.locator("#jobs tbody tr")).to_have_count(2, timeout=POLLED)
        expect(card).to_be_hidden()
        assert violations == []


# ---- the API and rsyslogd ---------------------------------------------------------------


def _form_sign_in(client: httpx.Client, name: str, password: str) -> int:
    form = client.get("/signin")
    csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    data = {"name": name, "password": password, "csrf_token": csrf, "next": "/"}
    return client.post("/signin", data=data).status_code


def _retry_as_operator(node: NodeProcess, job_id: int) -> None:
    with httpx.Client(base_url=node.url, timeout=30) as client:
        assert _form_sign_in(client, "operator1", "not the password") == 401
        assert _form_sign_in(client, "operator1", PASSWORD) == 303
        csrf = client.get("/api/session").json()["csrf_token"]
        retried = client.post(
            f"/api/jobs/{job_id}/retry", json={"reason": REASON}, headers={"X-CSRF-Token": csrf}
        )
        assert retried.status_code == 202, retried.text


def _audit_xml(message: bytes) -> ET.Element:
    assert message.startswith(BOM)
    schema = etree.RelaxNG.from_rnc_string(SCHEMA.read_text())
    document = etree.fromstring(message[len(BOM) :])
    assert schema.validate(document), schema.error_log
    return ET.fromstring(message[len(BOM) :])


@dataclass(frozen=True)
class AuditMessage:
    """What the assertions read of one DICOM audit message."""

    event: tuple[str, str]  # EventID, EventTypeCode ("" without one)
    action: str  # EventActionCode ("" without one)
    outcome: str  # EventOutcomeIndicator
    source_id: str  # AuditSourceID
    users: frozenset[str]  # the ActiveParticipants' UserIDs
    objects: tuple[str, ...]  # the ParticipantObjectIDs
    details: dict[str, str]  # ParticipantObjectDetail type -> decoded value
    instances: frozenset[str]  # SOP Instance UIDs listed

    @classmethod
    def parse(cls, message: bytes) -> AuditMessage:
        root = _audit_xml(message)
        event = root.find("EventIdentification")
        source = root.find("AuditSourceIdentification")
        assert event is not None and source is not None
        codes = [event.find(tag) for tag in ("EventID", "EventTypeCode")]
        return cls(
            event=tuple(c.get("csd-code", "") if c is not None else "" for c in codes),  # type: ignore[arg-type]
            action=event.get("EventActionCode", ""),
            outcome=event.get("EventOutcomeIndicator", ""),
            source_id=source.get("AuditSourceID", ""),
            users=frozenset(p.get("UserID", "") for p in root.iter("ActiveParticipant")),
            objects=tuple(
                o.get("ParticipantObjectID", "")
                for o in root.iter("ParticipantObjectIdentification")
            ),
            details={
                d.get("type", ""): base64.b64decode(d.get("value", "")).decode()
                for d in root.iter("ParticipantObjectDetail")
            },
            instances=frozenset(i.get("UID", "") for i in root.iter("Instance")),
        )


# PS3.15 A.5.3 (EventID, EventTypeCode) of what the node sends
START, STOP = ("110100", "110120"), ("110100", "110121")  # Application Activity
TRANSFERRED = ("110104", "")  # DICOM Instances Transferred (received, sent, committed)
NODE_AUTHENTICATION = ("110113", "110126")  # Security Alert: an association
RESTRICTED_FUNCTION = ("110113", "110132")  # Security Alert: an operator's action
LOGIN = ("110114", "110122")  # User Authentication


def _node_messages(rsyslog: Rsyslog) -> list[SyslogMessage]:
    """What rsyslogd received from the node (not its own start-up probe)."""
    return [m for m in rsyslog.messages() if m.app_name == "ainode"]


def _received_messages(rsyslog: Rsyslog) -> list[AuditMessage]:
    return [AuditMessage.parse(m.msg) for m in _node_messages(rsyslog)]


def _uids(by_class: dict[str, list[str]]) -> set[str]:
    return {uid for uids in by_class.values() for uid in uids}


def test_every_flow_is_in_the_api_and_reaches_rsyslog(audited: AuditedNode) -> None:
    node = audited.node
    retried_job = audited.jobs[0]["id"]
    _retry_as_operator(node, retried_job)

    def retried_and_failed_again() -> list[dict] | None:
        sent = audited.audit(kind="results_sent")
        offsite = [r for r in sent if r["detail"]["destination"] == "offsite"]
        return sent if len(offsite) == 6 and _jobs_failed(node) else None

    wait_for(retried_and_failed_again, 120, what="the retried delivery failing twice more")
    committed = _check_api(audited, retried_job)
    _check_syslog(audited, committed)

    # Stopping the node: each process records its stop, and says so to rsyslogd.
    node.stop()

    def stopped() -> set[str]:
        messages = [m for m in _received_messages(audited.rsyslog) if m.event == STOP]
        users = {user for m in messages for user in m.users}
        return users if {"ainode serve", "ainode worker"} <= users else set()

    wait_for(stopped, 60, what="the stop messages of both processes")


def _check_api(audited: AuditedNode, retried_job: int) -> set[str]:
    """What ``GET /api/audit`` lists; the SOP Instance UIDs the archive committed."""
    rows = audited.audit()

    def of(kind: str) -> list[dict]:
        return [r for r in rows if r["kind"] == kind]

    # The association that brought the study, and the study it stored.
    (association,) = [r for r in of("association") if r["actor"] == "MODALITY"]
    assert (association["peer_address"], association["outcome"]) == ("127.0.0.1", 0)
    assert association["detail"]["called_ae_title"] == "AINODE"
    assert association["detail"]["instances"] == len(audited.files)
    assert any(r["actor"] == "ORTHANC" for r in of("association"))  # its commitment report
    (received,) = of("instances_received")
    assert received["detail"]["study"]["study_instance_uid"] == audited.study_uid
    assert received["detail"]["study"]["patient_id"] == "PHANTOM801"
    assert received["detail"]["sop_classes"] == {CT: len(audited.files)}

    # Results: stored and committed at the archive; dead-lettered offsite, then retried.
    results = {j["id"]: j["results"] for j in audited.jobs}
    to_pacs = [r for r in of("results_sent") if r["detail"]["destination"] == "pacs"]
    assert len(to_pacs) == 2 and {r["outcome"] for r in to_pacs} == {0}
    for sent in to_pacs:
        made = results[sent["detail"]["job_id"]]
        assert _uids(sent["detail"]["instances"]) == {r["sop_instance_uid"] for r in made}
        assert sent["detail"]["destination_address"] == audited.archive.destination
        assert sent["detail"]["study"]["study_instance_uid"] == audited.study_uid
    offsite = [r for r in of("results_sent") if r["detail"]["destination"] == "offsite"]
    assert sorted(r["outcome"] for r in offsite) == [4, 4, 4, 8, 8, 8]  # minor, then dead
    assert all("not established" in r["detail"]["reason"] for r in offsite)
    assert sum(r["detail"]["job_id"] == retried_job for r in offsite) == 4
    commitments = of("commitment_received")
    assert {(c["actor"], c["outcome"]) for c in commitments} == {("ORTHANC", 0)}
    assert all(c["detail"]["failed"] == {} for c in commitments)
    committed = {uid for c in commitments for uid in _uids(c["detail"]["committed"])}
    assert committed == {uid for s in to_pacs for uid in _uids(s["detail"]["instances"])}

    # People: a failed and a good sign-in, and the operator's retry with who and why.
    sign_ins = [(r["outcome"], r["detail"]["reason"]) for r in of("sign_in")]
    assert (4, "wrong name or password") in sign_ins and (0, "") in sign_ins
    (action,) = of("operator_action")
    assert (action["actor"], action["actor_role"]) == ("operator1", "operator")
    assert (action["outcome"], action["peer_address"]) == (0, "127.0.0.1")
    assert action["detail"]["action"] == "job_retry"
    assert action["detail"]["target"] == f"/api/jobs/{retried_job}/retry"
    assert action["detail"]["reason"] == REASON
    assert {r["detail"]["process"] for r in of("application_start")} == {
        "ainode serve", "ainode worker",
    }  # fmt: skip
    return committed


def _check_syslog(audited: AuditedNode, committed: set[str]) -> None:
    """The same events as DICOM audit messages at rsyslogd (over TLS), each one valid."""

    def all_arrived() -> list[AuditMessage] | None:
        found = _received_messages(audited.rsyslog)
        retried = any(m.event == RESTRICTED_FUNCTION for m in found)
        read = [m for m in found if m.event == TRANSFERRED and m.action == "R"]
        return found if retried and len(read) >= 10 else None  # 8 tries, 2 reports

    messages = wait_for(all_arrived, 60, what="the audit messages at rsyslogd")
    assert {m.input for m in _node_messages(audited.rsyslog)} == {"tls"}
    assert {m.source_id for m in messages} == {SOURCE_ID}
    started = {user for m in messages if m.event == START for user in m.users}
    assert started >= {"ainode serve", "ainode worker"}
    accepted = [m for m in messages if m.event == NODE_AUTHENTICATION and "MODALITY" in m.users]
    assert [m.outcome for m in accepted] == ["0"]

    transferred = [m for m in messages if m.event == TRANSFERRED]
    (stored,) = [m for m in transferred if m.action == "C"]
    assert stored.objects[0] == audited.study_uid
    reports = [m for m in transferred if "TransactionUID" in m.details]
    sent = [m for m in transferred if m.action == "R" and m not in reports]
    to_pacs = [m for m in sent if m.details["Destination"] == "pacs"]
    assert {uid for m in to_pacs for uid in m.instances} == committed
    assert {uid for m in reports for uid in m.instances} == committed
    offsite = [m.outcome for m in sent if m.details["Destination"] == "offsite"]
    assert sorted(offsite) == ["4", "4", "4", "8", "8", "8"]

    logins = [m for m in messages if m.event == LOGIN and "operator1" in m.users]
    assert sorted(m.outcome for m in logins) == ["0", "4"]
    (retry,) = [m for m in messages if m.event == RESTRICTED_FUNCTION]
    assert "operator1" in retry.users and retry.details["Reason"] == REASON
