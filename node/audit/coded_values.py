"""The coded values of DICOM Audit Messages: event ids and types, participant roles,
object id types (DCM and RFC-3881 codes, PS3.15 A.5 and PS3.16 CID 403), and the
fixed value sets of the A.5.1 schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from node.audit.events import SecurityAlertType


@dataclass(frozen=True)
class Code:
    """A coded value: csd-code, codeSystemName, originalText (the code meaning)."""

    value: str
    scheme: str
    meaning: str


def _dcm(value: str, meaning: str) -> Code:
    return Code(value, "DCM", meaning)


APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
APPLICATION = _dcm("110150", "Application")
APPLICATION_LAUNCHER = _dcm("110151", "Application Launcher")
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")
STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
NODE_ID = _dcm("110182", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
URI = Code("12", "RFC-3881", "URI")

ALERT_TYPES: Mapping[SecurityAlertType, Code] = {  # DCID 403
    SecurityAlertType.NODE_AUTHENTICATION: _dcm("110126", "Node Authentication"),
    SecurityAlertType.NETWORK_CONFIGURATION: _dcm("110128", "Network Configuration"),
    SecurityAlertType.SECURITY_CONFIGURATION: _dcm("110129", "Security Configuration"),
    SecurityAlertType.SOFTWARE_CONFIGURATION: _dcm("110131", "Software Configuration"),
    SecurityAlertType.USE_OF_RESTRICTED_FUNCTION: _dcm("110132", "Use of Restricted Function"),
    SecurityAlertType.AUDIT_RECORDING_STOPPED: _dcm("110133", "Audit Recording Stopped"),
    SecurityAlertType.AUDIT_RECORDING_STARTED: _dcm("110134", "Audit Recording Started"),
    SecurityAlertType.SECURITY_ROLES_CHANGED: _dcm("110136", "Security Roles Changed"),
    SecurityAlertType.USER_SECURITY_ATTRIBUTES_CHANGED: _dcm(
        "110137", "User Security Attributes Changed"
    ),
}

APPLICATION_SERVER = "4"  # AuditSourceTypeCode: application server process (A.5.1.2.1)
# ParticipantObjectTypeCode and ...TypeCodeRole values (A.5.1.2.2)
PERSON, SYSTEM_OBJECT = "1", "2"
ROLE_PATIENT, ROLE_REPORT, ROLE_SECURITY_RESOURCE = "1", "3", "13"
