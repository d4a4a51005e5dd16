"""Writes a DICOM Audit Message's XML (PS3.15 A.5.1) from its parts.

Elements come in the order of the A.5.1 schema. The text has no raw line breaks (they
are written as character references), so a syslog receiver that splits on them keeps
a message whole; characters XML cannot carry at all become U+FFFD.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from node.audit import coded_values as codes
from node.audit.coded_values import Code
from node.audit.events import EventOutcome


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: a process (AE) or a person."""

    user_id: str
    is_requestor: bool
    role: Code | None = None
    ae_title: str = ""  # written as AlternativeUserID "AETITLES=..." (A.5.2.2)
    host: str = ""  # NetworkAccessPointID; an IP address or a machine name


@dataclass(frozen=True)
class ParticipantObject:
    """A ParticipantObjectIdentification."""

    object_id: str
    id_type: Code
    name: str
    type_code: str
    role: str
    details: tuple[tuple[str, str], ...] = ()  # ValuePair type -> text (base64 in XML)
    accession: str = ""
    instances: Mapping[str, Sequence[str]] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)  # SOP classes without UIDs


@dataclass(frozen=True)
class MessageContent:
    """What varies between the kinds of audit message."""

    event_id: Code
    action: str
    participants: Sequence[Participant]
    objects: Sequence[ParticipantObject] = ()
    event_type: Code | None = None


def write_message(
    content: MessageContent,
    *,
    outcome: EventOutcome,
    outcome_description: str,
    occurred_at: datetime,
    source_id: str,
) -> bytes:
    """The UTF-8 XML of one ``AuditMessage``, declaration included."""
    root = ET.Element("AuditMessage")
    identification = ET.SubElement(
        root,
        "EventIdentification",
        EventActionCode=content.action,
        EventDateTime=_datetime(occurred_at),
        EventOutcomeIndicator=str(int(outcome)),
    )
    _code(identification, "EventID", content.event_id)
    if content.event_type is not None:
        _code(identification, "EventTypeCode", content.event_type)
    if outcome is not EventOutcome.SUCCESS and outcome_description:
        ET.SubElement(identification, "EventOutcomeDescription").text = _clean(outcome_description)
    for participant in content.participants:
        _participant(root, participant)
    source_element = ET.SubElement(
        root, "AuditSourceIdentification", AuditSourceID=_clean(source_id)
    )
    ET.SubElement(source_element, "AuditSourceTypeCode", {"csd-code": codes.APPLICATION_SERVER})
    for item in content.objects:
        _participant_object(root, item)
    text = ET.tostring(root, encoding="unicode")
    # Raw line breaks can only be in element text here (ET escapes them in attributes).
    text = text.replace("\r", "&#13;").replace("\n", "&#10;")
    return ('<?xml version="1.0" encoding="UTF-8"?>' + text).encode("utf-8")


# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _datetime(moment: datetime) -> str:
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    attributes = {"csd-code": code.value, "codeSystemName": code.scheme}
    return ET.SubElement(parent, tag, attributes, originalText=code.meaning)


def _access_point_type(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "1"  # machine name
    return "2"  # IP address


def _participant(root: ET.Element, participant: Participant) -> None:
    attributes = {
        "UserID": _clean(participant.user_id),
        "UserIsRequestor": "true" if participant.is_requestor else "false",
    }
    if participant.ae_title:
        attributes["AlternativeUserID"] = _clean(f"AETITLES={participant.ae_title}")
    if participant.host:
        attributes["NetworkAccessPointID"] = _clean(participant.host)
        attributes["NetworkAccessPointTypeCode"] = _access_point_type(participant.host)
    element = ET.SubElement(root, "ActiveParticipant", attributes)
    if participant.role is not None:
        _code(element, "RoleIDCode", participant.role)


def _participant_object(root: ET.Element, item: ParticipantObject) -> None:
    element = ET.SubElement(
        root,
        "ParticipantObjectIdentification",
        ParticipantObjectID=_clean(item.object_id),
        ParticipantObjectTypeCode=item.type_code,
        ParticipantObjectTypeCodeRole=item.role,
    )
    _code(element, "ParticipantObjectIDTypeCode", item.id_type)
    ET.SubElement(element, "ParticipantObjectName").text = _clean(item.name)
    for kind, text in item.details:
        value = base64.b64encode(text.encode("utf-8")).decode("ascii")
        ET.SubElement(element, "ParticipantObjectDetail", type=kind, value=value)
    if not (item.accession or item.instances or item.counts):
        return
    description = ET.SubElement(element, "ParticipantObjectDescription")
    if item.accession:
        ET.SubElement(description, "Accession", Number=_clean(item.accession))
    for sop_class, uids in item.instances.items():
        entry = ET.SubElement(
            description, "SOPClass", UID=sop_class, NumberOfInstances=str(len(uids))
        )
        for uid in uids:
            ET.SubElement(entry, "Instance", UID=uid)
    for sop_class, count in item.counts.items():
        ET.SubElement(description, "SOPClass", UID=sop_class, NumberOfInstances=str(count))
