"""DICOM Audit Messages (PS3.15 A.5): every kind validates against the standard's own
schema (A.5.1, kept in tests/dicom_audit_message.rnc, read with lxml's RELAX NG), and
carries the codes and participants its A.5.3 table asks for, read back from the XML."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree

from node.audit.dicom_message import AuditSource, audit_message
from node.audit.events import (
    ApplicationStarted,
    ApplicationStopped,
    AssociationEnded,
    AuditedEvent,
    CommitmentReceived,
    EventOutcome,
    InstancesReceived,
    OperatorAction,
    ResultsSent,
    SecurityAlert,
    SecurityAlertType,
    SignIn,
    SignOut,
    StudyRef,
)

SCHEMA = Path(__file__).resolve().parents[1] / "dicom_audit_message.rnc"
SOURCE = AuditSource("AINODE@hospital", "AINODE", "ainode.example.org")
AT = datetime(2026, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
CT, SEG, SR = (
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.88.34",
)
STUDY = StudyRef("1.2.826.0.1.3680043.2.1125.1", "PAT-1", "Doe^Jane", "ACC-1", "CT chest")

EVENTS: dict[str, AuditedEvent] = {
    "association accepted": AssociationEnded(
        calling_ae_title="PACS", called_ae_title="AINODE", peer_host="192.0.2.5",
        tls_identity="CN=PACS", instances=3,
    ),
    "association refused": AssociationEnded(
        calling_ae_title="INTRUDER", called_ae_title="AINODE", peer_host="10.9.9.9",
        outcome=EventOutcome.SERIOUS_FAILURE, reason="calling AE title not allowed",
    ),
    "instances received": InstancesReceived(
        calling_ae_title="PACS", called_ae_title="AINODE", peer_host="192.0.2.5",
        study=STUDY, sop_classes={CT: 120},
    ),
    "instances replaced": InstancesReceived(
        calling_ae_title="PACS", called_ae_title="AINODE", peer_host="::1",
        study=StudyRef("1.2.3"), sop_classes={CT: 1}, updated=True,
    ),
    "results sent": ResultsSent(
        destination="archive", destination_address="ORTHANC@pacs.example.org:4242",
        destination_ae_title="ORTHANC", destination_host="pacs.example.org",
        source_ae_title="AINODE", study=STUDY, instances={SEG: ("1.2.3.4",), SR: ("1.2.3.5",)},
        job_id=7,
    ),
    "results not sent": ResultsSent(
        destination="web", destination_address="https://pacs.example.org/dicom-web",
        study=STUDY, instances={SEG: ("1.2.3.4",)},
        outcome=EventOutcome.MINOR_FAILURE, reason="503 from the archive",
    ),
    "commitment": CommitmentReceived(
        destination="archive", archive_ae_title="ORTHANC", archive_host="192.0.2.6",
        node_ae_title="AINODE", transaction_uid="1.2.3.99", study=STUDY,
        committed={SEG: ("1.2.3.4",)}, failed={SR: ("1.2.3.5",)},
        outcome=EventOutcome.MINOR_FAILURE, reason="1 of 2 instances not committed",
    ),
    "sign-in": SignIn(user="alice", role="admin", client_host="192.0.2.10"),
    "failed sign-in": SignIn(
        user="mallory", client_host="192.0.2.66",
        outcome=EventOutcome.MINOR_FAILURE, reason="wrong password",
    ),
    "sign-out by timeout": SignOut(user="alice", client_host="192.0.2.10", by_user=False),
    "operator action": OperatorAction(
        user="alice", role="operator", client_host="192.0.2.10", action="retry job",
        target="/api/jobs/7/retry", reason="archive was down",
    ),
    "application start": ApplicationStarted(process="ainode serve", ae_titles=("AINODE",)),
    "application stop": ApplicationStopped(
        process="ainode serve", ae_titles=("AINODE",), launched_by="root"
    ),
    "security alert": SecurityAlert(
        alert_type=SecurityAlertType.NODE_AUTHENTICATION, subject="203.0.113.9",
        subject_is_node=True, description="TLS handshake failed: unknown CA",
        outcome=EventOutcome.MINOR_FAILURE,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def schema() -> etree.RelaxNG:
    return etree.RelaxNG.from_rnc_string(SCHEMA.read_text())


def _xml(event: AuditedEvent) -> ET.Element:
    return ET.fromstring(audit_message(event, SOURCE, AT))


def _code(element: ET.Element | None) -> tuple[str | None, str | None, str | None]:
    assert element is not None
    return element.get("csd-code"), element.get("codeSystemName"), element.get("originalText")


def _participants(message: ET.Element) -> dict[str, ET.Element]:
    return {p.attrib["UserID"]: p for p in message.findall("ActiveParticipant")}


def _types(item: ET.Element) -> tuple[str | None, str | None]:
    return item.get("ParticipantObjectTypeCode"), item.get("ParticipantObjectTypeCodeRole")


def _details(item: ET.Element) -> dict[str, str]:
    return {
        d.attrib["type"]: base64.b64decode(d.attrib["value"]).decode()
        for d in item.findall("ParticipantObjectDetail")
    }


@pytest.mark.parametrize("name", EVENTS)
def test_every_message_validates_against_the_dicom_schema(name: str, schema: etree.RelaxNG) -> None:
    document = etree.fromstring(audit_message(EVENTS[name], SOURCE, AT))
    assert schema.validate(document), schema.error_log


def test_the_schema_refuses_what_the_standard_refuses(schema: etree.RelaxNG) -> None:
    good = audit_message(EVENTS["sign-in"], SOURCE, AT)
    assert schema.validate(etree.fromstring(good))
    no_source = etree.fromstring(good)
    no_source.remove(no_source.find("AuditSourceIdentification"))
    assert not schema.validate(no_source)
    bad_outcome = good.replace(b'EventOutcomeIndicator="0"', b'EventOutcomeIndicator="1"')
    assert not schema.validate(etree.fromstring(bad_outcome))


@pytest.mark.parametrize("name", EVENTS)
def test_header_fields_of_every_message(name: str) -> None:
    event = EVENTS[name]
    raw = audit_message(event, SOURCE, AT)
    assert raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage>')
    assert b"\n" not in raw and b"\r" not in raw
    identification = ET.fromstring(raw).find("EventIdentification")
    assert identification is not None
    assert identification.get("EventDateTime") == "2026-03-04T05:06:07.890Z"
    assert identification.get("EventOutcomeIndicator") == str(int(event.outcome))
    described = identification.findtext("EventOutcomeDescription")
    assert described == ((event.outcome_description or None) if event.outcome else None)
    source = ET.fromstring(raw).find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "AINODE@hospital"
    assert _code(source.find("AuditSourceTypeCode"))[0] == "4"
    assert json.loads(json.dumps(event.detail()))  # the row's detail is plain JSON


def test_instances_received_is_dicom_instances_transferred() -> None:
    message = _xml(EVENTS["instances received"])
    event = message.find("EventIdentification")
    assert event is not None and event.get("EventActionCode") == "C"
    assert _code(event.find("EventID")) == ("110104", "DCM", "DICOM Instances Transferred")
    sender, receiver = _participants(message)["PACS"], _participants(message)["AINODE"]
    assert _code(sender.find("RoleIDCode")) == ("110153", "DCM", "Source Role ID")
    assert sender.get("UserIsRequestor") == "true"
    assert sender.get("AlternativeUserID") == "AETITLES=PACS"
    assert (sender.get("NetworkAccessPointID"), sender.get("NetworkAccessPointTypeCode")) == (
        "192.0.2.5", "2"
    )  # fmt: skip
    assert _code(receiver.find("RoleIDCode")) == ("110152", "DCM", "Destination Role ID")
    assert receiver.get("UserIsRequestor") == "false"
    assert receiver.get("NetworkAccessPointTypeCode") == "1"  # a machine name
    study, patient = message.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == STUDY.study_instance_uid
    assert _types(study) == ("2", "3")  # system object, report
    assert _code(study.find("ParticipantObjectIDTypeCode")) == (
        "110180",
        "DCM",
        "Study Instance UID",
    )
    assert study.find("ParticipantObjectDescription/Accession").get("Number") == "ACC-1"  # type: ignore[union-attr]
    sop_class = study.find("ParticipantObjectDescription/SOPClass")
    assert sop_class is not None and sop_class.attrib == {"UID": CT, "NumberOfInstances": "120"}
    assert patient.get("ParticipantObjectID") == "PAT-1"
    assert patient.findtext("ParticipantObjectName") == "Doe^Jane"
    assert _code(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")
    assert _types(patient) == ("1", "1")  # person, patient


def test_replaced_instances_are_an_update() -> None:
    identification = _xml(EVENTS["instances replaced"]).find("EventIdentification")
    assert identification is not None and identification.get("EventActionCode") == "U"


def test_results_sent_name_each_instance_and_the_destination() -> None:
    message = _xml(EVENTS["results sent"])
    assert message.find("EventIdentification").get("EventActionCode") == "R"  # type: ignore[union-attr]
    node, archive = _participants(message)["AINODE"], _participants(message)["ORTHANC"]
    assert _code(node.find("RoleIDCode"))[0] == "110153" and node.get("UserIsRequestor") == "true"
    assert _code(archive.find("RoleIDCode"))[0] == "110152"
    assert archive.get("NetworkAccessPointID") == "pacs.example.org"
    study = message.find("ParticipantObjectIdentification")
    assert study is not None and _details(study) == {"Destination": "archive"}
    classes = {
        c.attrib["UID"]: [i.attrib["UID"] for i in c.findall("Instance")]
        for c in study.findall("ParticipantObjectDescription/SOPClass")
    }
    assert classes == {SEG: ["1.2.3.4"], SR: ["1.2.3.5"]}
    web = _participants(_xml(EVENTS["results not sent"]))
    assert "https://pacs.example.org/dicom-web" in web  # no AE title: the address


def test_commitment_lists_what_was_committed_and_what_failed() -> None:
    message = _xml(EVENTS["commitment"])
    study = message.find("ParticipantObjectIdentification")
    assert study is not None
    assert _details(study) == {
        "TransactionUID": "1.2.3.99", "Destination": "archive", "FailedSOPInstanceUIDs": "1.2.3.5"
    }  # fmt: skip
    assert [c.get("UID") for c in study.findall("ParticipantObjectDescription/SOPClass")] == [SEG]
    assert _participants(message)["ORTHANC"].get("UserIsRequestor") == "true"


@pytest.mark.parametrize(
    ("name", "event_type", "user_requests"),
    [("sign-in", "110122", "true"), ("failed sign-in", "110122", "true"),
     ("sign-out by timeout", "110123", "false")],
)  # fmt: skip
def test_sign_in_and_out_are_user_authentication(
    name: str, event_type: str, user_requests: str
) -> None:
    message = _xml(EVENTS[name])
    event = message.find("EventIdentification")
    assert event is not None and event.get("EventActionCode") == "E"
    assert _code(event.find("EventID")) == ("110114", "DCM", "User Authentication")
    assert _code(event.find("EventTypeCode"))[0] == event_type
    user = EVENTS[name].actor
    person, node = _participants(message)[user], _participants(message)["AINODE"]
    assert person.get("UserIsRequestor") == user_requests
    assert node.get("UserIsRequestor") == ("false" if user_requests == "true" else "true")
    assert person.get("NetworkAccessPointTypeCode") == "2"
    assert message.find("ParticipantObjectIdentification") is None  # A.5.3.12: none


def test_operator_action_is_a_security_alert_with_who_what_and_why() -> None:
    message = _xml(EVENTS["operator action"])
    event = message.find("EventIdentification")
    assert event is not None
    assert _code(event.find("EventID")) == ("110113", "DCM", "Security Alert")
    assert _code(event.find("EventTypeCode")) == ("110132", "DCM", "Use of Restricted Function")
    operator = _participants(message)["alice"]
    assert operator.get("UserIsRequestor") == "true"
    assert operator.get("NetworkAccessPointID") == "192.0.2.10"
    subject = message.find("ParticipantObjectIdentification")
    assert subject is not None and subject.get("ParticipantObjectID") == "/api/jobs/7/retry"
    assert _code(subject.find("ParticipantObjectIDTypeCode")) == ("12", "RFC-3881", "URI")
    assert _details(subject) == {
        "Alert Description": "retry job: archive was down", "Reason": "archive was down"
    }  # fmt: skip


def test_a_refused_association_is_a_failed_node_authentication() -> None:
    message = _xml(EVENTS["association refused"])
    event = message.find("EventIdentification")
    assert event is not None and event.get("EventOutcomeIndicator") == "8"
    assert _code(event.find("EventTypeCode")) == ("110126", "DCM", "Node Authentication")
    subject = message.find("ParticipantObjectIdentification")
    assert subject is not None and subject.get("ParticipantObjectID") == "10.9.9.9"
    assert _code(subject.find("ParticipantObjectIDTypeCode")) == ("110182", "DCM", "Node ID")
    assert "calling AE title not allowed" in _details(subject)["Alert Description"]
    peer = _participants(message)["INTRUDER"]
    assert peer.get("UserIsRequestor") == "false"  # A.5.3.11: performing, never requestor
    accepted = _details(
        _xml(EVENTS["association accepted"]).find("ParticipantObjectIdentification")
    )  # type: ignore[arg-type]
    assert "TLS identity CN=PACS" in accepted["Alert Description"]


@pytest.mark.parametrize(("name", "event_type"), [("application start", "110120"),
                                                  ("application stop", "110121")])  # fmt: skip
def test_start_and_stop_are_application_activity(name: str, event_type: str) -> None:
    message = _xml(EVENTS[name])
    event = message.find("EventIdentification")
    assert event is not None
    assert _code(event.find("EventID")) == ("110100", "DCM", "Application Activity")
    assert _code(event.find("EventTypeCode"))[0] == event_type
    application = _participants(message)["ainode serve"]
    assert _code(application.find("RoleIDCode")) == ("110150", "DCM", "Application")
    assert application.get("AlternativeUserID") == "AETITLES=AINODE"
    launcher = _participants(message).get("root")
    if name == "application stop":
        assert launcher is not None and launcher.get("UserIsRequestor") == "true"
        assert _code(launcher.find("RoleIDCode"))[0] == "110151"
    else:
        assert launcher is None


def test_text_is_escaped_and_survives_the_round_trip(schema: etree.RelaxNG) -> None:
    reason = 'bad <tag> & "quotes"\nsecond line\x00 end'
    event = SignIn(user='eve"<&>', client_host="192.0.2.1", outcome=EventOutcome.MINOR_FAILURE,
                   reason=reason)  # fmt: skip
    raw = audit_message(event, SOURCE, AT)
    assert b"\n" not in raw and b"\x00" not in raw
    assert schema.validate(etree.fromstring(raw)), schema.error_log
    message = ET.fromstring(raw)
    assert message.findtext("EventIdentification/EventOutcomeDescription") == reason.replace(
        "\x00", "\ufffd"
    )
    assert 'eve"<&>' in _participants(message)


def test_event_time_is_written_in_utc() -> None:
    local = AT.astimezone(timezone(timedelta(hours=-5)))
    identification = ET.fromstring(audit_message(EVENTS["sign-in"], SOURCE, local)).find(
        "EventIdentification"
    )
    assert identification is not None
    assert identification.get("EventDateTime") == "2026-03-04T05:06:07.890Z"
