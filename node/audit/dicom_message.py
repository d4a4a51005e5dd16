"""DICOM Audit Messages (PS3.15 A.5): one XML ``AuditMessage`` per audited event.

Each event kind maps to the message PS3.15 A.5.3 defines for it: associations and
operator actions to Security Alert (A.5.3.11), received and sent instances and storage
commitment to DICOM Instances Transferred (A.5.3.7), sign-in and sign-out to User
Authentication (A.5.3.12), start and stop to Application Activity (A.5.3.1).
:mod:`node.audit.message_xml` writes the XML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import singledispatch

from node.audit import coded_values as codes
from node.audit.coded_values import Code
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
from node.audit.message_xml import MessageContent, Participant, ParticipantObject, write_message


@dataclass(frozen=True)
class AuditSource:
    """The node as the messages name it: AuditSourceID, its AE title and its host."""

    source_id: str
    ae_title: str
    host: str


def audit_message(event: AuditedEvent, source: AuditSource, occurred_at: datetime) -> bytes:
    """The UTF-8 XML of ``event``'s DICOM Audit Message, declaration included."""
    return write_message(
        _message(event, source),
        outcome=event.outcome,
        outcome_description=event.outcome_description,
        occurred_at=occurred_at,
        source_id=source.source_id,
    )


# ---- one message per event kind ------------------------------------------------


@singledispatch
def _message(event: AuditedEvent, source: AuditSource) -> MessageContent:
    raise TypeError(f"no DICOM audit message for {type(event).__name__}")


def _node(source: AuditSource, *, is_requestor: bool, role: Code | None = None) -> Participant:
    return Participant(source.ae_title, is_requestor, role, source.ae_title, source.host)


def _ae(ae_title: str, host: str, *, is_requestor: bool, role: Code | None) -> Participant:
    return Participant(ae_title, is_requestor, role, ae_title, host)


@_message.register
def _association(event: AssociationEnded, source: AuditSource) -> MessageContent:
    # A minor failure is an accepted association that did not end in a release.
    accepted = event.outcome in (EventOutcome.SUCCESS, EventOutcome.MINOR_FAILURE)
    state = "accepted" if accepted else "not accepted"
    description = (
        f"association {event.calling_ae_title} -> {event.called_ae_title} {state}"
        + (f": {event.reason}" if event.reason else "")
        + (f"; TLS identity {event.tls_identity}" if event.tls_identity else "")
        + f"; {event.instances} instances"
    )
    subject = ParticipantObject(
        event.peer_host or event.calling_ae_title,
        codes.NODE_ID,
        event.calling_ae_title,
        codes.SYSTEM_OBJECT,
        codes.ROLE_SECURITY_RESOURCE,
        details=(("Alert Description", description),),
    )
    return MessageContent(
        codes.SECURITY_ALERT,
        "E",
        [
            _node(source, is_requestor=False),
            _ae(event.calling_ae_title, event.peer_host, is_requestor=False, role=None),
        ],
        [subject],
        codes.ALERT_TYPES[SecurityAlertType.NODE_AUTHENTICATION],
    )


def _study_objects(
    study: StudyRef,
    instances: Mapping[str, Sequence[str]] | None = None,
    counts: Mapping[str, int] | None = None,
    details: tuple[tuple[str, str], ...] = (),
) -> list[ParticipantObject]:
    """The study (1) and its patient (1) of an Instances Transferred message."""
    return [
        ParticipantObject(
            study.study_instance_uid,
            codes.STUDY_INSTANCE_UID,
            study.study_description or study.study_instance_uid,
            codes.SYSTEM_OBJECT,
            codes.ROLE_REPORT,
            details=details,
            accession=study.accession_number,
            instances=instances or {},
            counts=counts or {},
        ),
        ParticipantObject(
            study.patient_id,
            codes.PATIENT_NUMBER,
            study.patient_name or study.patient_id,
            codes.PERSON,
            codes.ROLE_PATIENT,
        ),
    ]


@_message.register
def _received(event: InstancesReceived, source: AuditSource) -> MessageContent:
    return MessageContent(
        codes.INSTANCES_TRANSFERRED,
        "U" if event.updated else "C",
        [
            _ae(event.calling_ae_title, event.peer_host, is_requestor=True, role=codes.SOURCE),
            _node(source, is_requestor=False, role=codes.DESTINATION),
        ],
        _study_objects(event.study, counts=event.sop_classes),
    )


@_message.register
def _sent(event: ResultsSent, source: AuditSource) -> MessageContent:
    destination = Participant(
        event.destination_ae_title or event.destination_address,
        False,
        codes.DESTINATION,
        event.destination_ae_title,
        event.destination_host,
    )
    return MessageContent(
        codes.INSTANCES_TRANSFERRED,
        "R",  # the audit source is not the receiver (A.5.3.7)
        [_node(source, is_requestor=True, role=codes.SOURCE), destination],
        _study_objects(event.study, event.instances, details=(("Destination", event.destination),)),
    )


@_message.register
def _committed(event: CommitmentReceived, source: AuditSource) -> MessageContent:
    failed = [uid for uids in event.failed.values() for uid in uids]
    details = [("TransactionUID", event.transaction_uid), ("Destination", event.destination)]
    if failed:
        details.append(("FailedSOPInstanceUIDs", " ".join(failed)))
    return MessageContent(
        codes.INSTANCES_TRANSFERRED,
        "R",
        [
            _node(source, is_requestor=False, role=codes.SOURCE),
            _ae(
                event.archive_ae_title,
                event.archive_host,
                is_requestor=True,
                role=codes.DESTINATION,
            ),
        ],
        _study_objects(event.study, event.committed, details=tuple(details)),
    )


def _authentication(
    user: str, host: str, by_user: bool, event_type: Code, source: AuditSource
) -> MessageContent:
    return MessageContent(
        codes.USER_AUTHENTICATION,
        "E",
        [Participant(user, by_user, host=host), _node(source, is_requestor=not by_user)],
        event_type=event_type,
    )


@_message.register
def _sign_in(event: SignIn, source: AuditSource) -> MessageContent:
    return _authentication(event.user, event.client_host, True, codes.LOGIN, source)


@_message.register
def _sign_out(event: SignOut, source: AuditSource) -> MessageContent:
    return _authentication(event.user, event.client_host, event.by_user, codes.LOGOUT, source)


@_message.register
def _operator_action(event: OperatorAction, source: AuditSource) -> MessageContent:
    description = event.action + (f": {event.reason}" if event.reason else "")
    details = [("Alert Description", description)]
    if event.reason:
        details.append(("Reason", event.reason))
    subject = ParticipantObject(
        event.target,
        codes.URI,
        event.action,
        codes.SYSTEM_OBJECT,
        codes.ROLE_SECURITY_RESOURCE,
        tuple(details),
    )
    return MessageContent(
        codes.SECURITY_ALERT,
        "E",
        [Participant(event.user, True, host=event.client_host), _node(source, is_requestor=False)],
        [subject],
        codes.ALERT_TYPES[event.alert_type],
    )


@_message.register
def _security_alert(event: SecurityAlert, source: AuditSource) -> MessageContent:
    subject = ParticipantObject(
        event.subject,
        codes.NODE_ID if event.subject_is_node else codes.URI,
        event.subject,
        codes.SYSTEM_OBJECT,
        codes.ROLE_SECURITY_RESOURCE,
        (("Alert Description", event.description),),
    )
    participants = [_node(source, is_requestor=False)]
    if event.by:
        participants.append(Participant(event.by, False, host=event.by_host))
    return MessageContent(
        codes.SECURITY_ALERT, "E", participants, [subject], codes.ALERT_TYPES[event.alert_type]
    )


def _application(
    event: ApplicationStarted | ApplicationStopped, event_type: Code, source: AuditSource
) -> MessageContent:
    application = Participant(
        event.process, False, codes.APPLICATION, ";".join(event.ae_titles), source.host
    )
    participants = [application]
    if event.launched_by:
        participants.append(Participant(event.launched_by, True, codes.APPLICATION_LAUNCHER))
    return MessageContent(codes.APPLICATION_ACTIVITY, "E", participants, event_type=event_type)


@_message.register
def _started(event: ApplicationStarted, source: AuditSource) -> MessageContent:
    return _application(event, codes.APPLICATION_START, source)


@_message.register
def _stopped(event: ApplicationStopped, source: AuditSource) -> MessageContent:
    return _application(event, codes.APPLICATION_STOP, source)
