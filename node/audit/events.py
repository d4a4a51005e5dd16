"""The events the audit trail records, one typed dataclass per :class:`AuditKind`.

An event says who did what to what, from where, and how it ended; it knows nothing of
the database or of DICOM audit messages (:mod:`node.audit.trail` stores it,
:mod:`node.audit.dicom_message` writes it as PS3.15 A.5 XML). Outcomes are DICOM's
EventOutcomeIndicator values, so the row, the API and the syslog message agree.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "ApplicationStarted",
    "ApplicationStopped",
    "AssociationEnded",
    "AuditKind",
    "AuditedEvent",
    "CommitmentReceived",
    "EventOutcome",
    "InstancesReceived",
    "OperatorAction",
    "ResultsSent",
    "SecurityAlert",
    "SecurityAlertType",
    "SignIn",
    "SignOut",
    "StudyRef",
]


class AuditKind(enum.StrEnum):
    """What an audit trail row records; one event class below per kind."""

    ASSOCIATION = "association"  # one DICOM association, from request to release/abort
    INSTANCES_RECEIVED = "instances_received"  # instances kept from one association
    RESULTS_SENT = "results_sent"  # results stored to a destination
    COMMITMENT_RECEIVED = "commitment_received"  # a storage commitment report
    SIGN_IN = "sign_in"  # success or failure, in the outcome
    SIGN_OUT = "sign_out"
    OPERATOR_ACTION = "operator_action"  # who did what, and why
    APPLICATION_START = "application_start"
    APPLICATION_STOP = "application_stop"
    SECURITY_ALERT = "security_alert"


class EventOutcome(enum.IntEnum):
    """DICOM EventOutcomeIndicator (PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4  # action restarted, e.g. a wrong password, first try
    SERIOUS_FAILURE = 8  # action terminated, e.g. association refused
    MAJOR_FAILURE = 12  # action made unavailable, e.g. account locked

    @property
    def text(self) -> str:
        return self.name.lower().replace("_", " ")


class SecurityAlertType(enum.StrEnum):
    """The Security Alert Type Codes (DCID 403) the node reports."""

    NODE_AUTHENTICATION = "node_authentication"
    NETWORK_CONFIGURATION = "network_configuration"
    SECURITY_CONFIGURATION = "security_configuration"
    SOFTWARE_CONFIGURATION = "software_configuration"
    USE_OF_RESTRICTED_FUNCTION = "use_of_restricted_function"
    AUDIT_RECORDING_STOPPED = "audit_recording_stopped"
    AUDIT_RECORDING_STARTED = "audit_recording_started"
    SECURITY_ROLES_CHANGED = "security_roles_changed"
    USER_SECURITY_ATTRIBUTES_CHANGED = "user_security_attributes_changed"


@dataclass(frozen=True)
class StudyRef:
    """The study (and its patient) an event's instances belong to."""

    study_instance_uid: str
    patient_id: str = ""
    patient_name: str = ""
    accession_number: str = ""
    study_description: str = ""


@dataclass(frozen=True, kw_only=True)
class AuditedEvent:
    """What every event has: an outcome and, for a failure or an action, a reason."""

    kind: ClassVar[AuditKind]
    outcome: EventOutcome = EventOutcome.SUCCESS
    reason: str = ""

    @property
    def actor(self) -> str:
        """Who acted: a user name or an AE title."""
        return ""

    @property
    def outcome_description(self) -> str:
        """What went wrong, for a failure's EventOutcomeDescription."""
        return self.reason

    @property
    def actor_role(self) -> str:
        return ""

    @property
    def peer_address(self) -> str:
        """The network address the actor came from (or was reached at)."""
        return ""

    def detail(self) -> dict[str, Any]:
        """The event's own fields as JSON values (the row's ``detail`` column)."""
        return {
            item.name: _json(getattr(self, item.name))
            for item in dataclasses.fields(self)
            if item.name != "outcome"
        }


def _json(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _json(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class _DicomPeerEvent(AuditedEvent):
    """An event on an association a peer opened to the node."""

    calling_ae_title: str
    called_ae_title: str
    peer_host: str = ""  # the peer's IP address
    tls_identity: str = ""  # the subject of the peer's TLS certificate; "" without one

    @property
    def actor(self) -> str:
        return self.calling_ae_title

    @property
    def actor_role(self) -> str:
        return "calling AE"

    @property
    def peer_address(self) -> str:
        return self.peer_host


@dataclass(frozen=True, kw_only=True)
class AssociationEnded(_DicomPeerEvent):
    """One association, refused, aborted or released; ``instances`` it stored."""

    kind: ClassVar[AuditKind] = AuditKind.ASSOCIATION
    instances: int = 0


@dataclass(frozen=True, kw_only=True)
class InstancesReceived(_DicomPeerEvent):
    """The instances of one study kept from one association (one patient, A.5.3.7)."""

    kind: ClassVar[AuditKind] = AuditKind.INSTANCES_RECEIVED
    study: StudyRef
    sop_classes: Mapping[str, int] = field(default_factory=dict)  # SOP Class UID -> count
    updated: bool = False  # replaced instances the node held (duplicate policy "replace")


@dataclass(frozen=True, kw_only=True)
class ResultsSent(AuditedEvent):
    """Results of one study stored to one destination (or the failed try)."""

    kind: ClassVar[AuditKind] = AuditKind.RESULTS_SENT
    destination: str  # the configured destination's name
    destination_address: str  # AET@host:port, or the DICOMweb root
    destination_ae_title: str = ""  # "" for DICOMweb
    destination_host: str = ""
    source_ae_title: str = ""  # the node's AE title
    study: StudyRef
    instances: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # class -> UIDs
    job_id: int | None = None

    @property
    def actor(self) -> str:
        return self.source_ae_title

    @property
    def actor_role(self) -> str:
        return "node"

    @property
    def peer_address(self) -> str:
        return self.destination_host


@dataclass(frozen=True, kw_only=True)
class CommitmentReceived(AuditedEvent):
    """A storage commitment report from a destination: what it now holds, what not."""

    kind: ClassVar[AuditKind] = AuditKind.COMMITMENT_RECEIVED
    destination: str
    archive_ae_title: str
    archive_host: str = ""
    node_ae_title: str = ""
    transaction_uid: str
    study: StudyRef
    committed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # class -> UIDs
    failed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return self.archive_ae_title

    @property
    def actor_role(self) -> str:
        return "archive"

    @property
    def peer_address(self) -> str:
        return self.archive_host


@dataclass(frozen=True, kw_only=True)
class _UserEvent(AuditedEvent):
    """An event a person caused through the web side."""

    user: str
    role: str = ""
    client_host: str = ""  # the browser's address

    @property
    def actor(self) -> str:
        return self.user

    @property
    def actor_role(self) -> str:
        return self.role

    @property
    def peer_address(self) -> str:
        return self.client_host


@dataclass(frozen=True, kw_only=True)
class SignIn(_UserEvent):
    """A sign-in attempt; a failure has a failure outcome and the reason."""

    kind: ClassVar[AuditKind] = AuditKind.SIGN_IN
    method: str = "password"


@dataclass(frozen=True, kw_only=True)
class SignOut(_UserEvent):
    kind: ClassVar[AuditKind] = AuditKind.SIGN_OUT
    by_user: bool = True  # False: the session expired or was ended by the node


@dataclass(frozen=True, kw_only=True)
class OperatorAction(_UserEvent):
    """Something an operator did (retry a job, change a setting...), on what, and why."""

    kind: ClassVar[AuditKind] = AuditKind.OPERATOR_ACTION
    action: str
    target: str  # what it acted on, as a URI path, e.g. "/api/jobs/12/retry"
    alert_type: SecurityAlertType = SecurityAlertType.USE_OF_RESTRICTED_FUNCTION


@dataclass(frozen=True, kw_only=True)
class _ApplicationEvent(AuditedEvent):
    process: str  # e.g. "ainode serve"
    ae_titles: tuple[str, ...] = ()
    launched_by: str = ""  # the user who started or stopped it, when known

    @property
    def actor(self) -> str:
        return self.launched_by or self.process

    @property
    def actor_role(self) -> str:
        return "operator" if self.launched_by else "application"


@dataclass(frozen=True, kw_only=True)
class ApplicationStarted(_ApplicationEvent):
    kind: ClassVar[AuditKind] = AuditKind.APPLICATION_START


@dataclass(frozen=True, kw_only=True)
class ApplicationStopped(_ApplicationEvent):
    kind: ClassVar[AuditKind] = AuditKind.APPLICATION_STOP


@dataclass(frozen=True, kw_only=True)
class SecurityAlert(AuditedEvent):
    """A security-relevant event with no kind of its own, e.g. a failed TLS handshake."""

    kind: ClassVar[AuditKind] = AuditKind.SECURITY_ALERT
    alert_type: SecurityAlertType
    subject: str  # a URI, or a node (host name or IP address) when subject_is_node
    subject_is_node: bool = False
    description: str
    by: str = ""  # who caused it, when known (AE title or user)
    by_host: str = ""

    @property
    def outcome_description(self) -> str:
        return self.reason or self.description

    @property
    def actor(self) -> str:
        return self.by

    @property
    def peer_address(self) -> str:
        return self.by_host
