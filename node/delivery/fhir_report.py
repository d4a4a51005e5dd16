"""Critical findings as a FHIR R4 DiagnosticReport with its Observations, in a
transaction Bundle (what ``node.delivery.fhir_rest`` POSTs).

Built and validated with ``fhir.resources.R4B`` (FHIR 4.3.0, which changed nothing of
DiagnosticReport, Observation or Bundle from R4 4.0.1): an object that does not match
the resource definitions raises here, so nothing malformed leaves the node.

- one Observation per finding: status preliminary (no person reviewed it), category
  imaging, coded by the finding's code, ``valueQuantity`` (a probability, UCUM "1", or
  a volume in mL), interpretation AA "Critical abnormal" (v3 ObservationInterpretation),
  the range that is not critical, the finding in words as a note, the model as device;
- the DiagnosticReport: identified by the KOS's SOP Instance UID, category RAD, LOINC
  18748-4 "Diagnostic imaging study", the findings as conclusion and conclusion codes,
  the Observations as results, the urgency as an ActPriority tag (S, A, R);
- both name the patient by identifier and the ImagingStudy by its Study Instance UID
  (system ``urn:dicom:uid``), logical references a server resolves its own way.

Every entry is a conditional create (``ifNoneExist`` on its identifier), so a retried
delivery creates nothing twice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from node.db.worklist import UpsPriority
from node.delivery.critical_facts import FindingFacts
from node.delivery.notification import Notification

DICOM_UID = "urn:dicom:uid"
URI = "urn:ietf:rfc:3986"
UCUM = "http://unitsofmeasure.org"
# Coding Scheme Designators (DICOM) as FHIR code systems.
CODE_SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "SRT": "http://snomed.info/sct",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "LN": "http://loinc.org",
    "UCUM": UCUM,
}
CRITICAL = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
    "code": "AA",
    "display": "Critical abnormal",
}
IMAGING = {
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "imaging",
    "display": "Imaging",
}
RADIOLOGY = {
    "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
    "code": "RAD",
    "display": "Radiology",
}
IMAGING_STUDY = {
    "system": "http://loinc.org",
    "code": "18748-4",
    "display": "Diagnostic imaging study",
}
ACT_PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
PRIORITY = {
    UpsPriority.STAT: ("S", "stat"),
    UpsPriority.HIGH: ("A", "ASAP"),
    UpsPriority.MEDIUM: ("R", "routine"),
    UpsPriority.LOW: ("R", "routine"),
}
_QUANTITY = {"ml": ("mL", "mL"), "": ("probability", "1")}  # unit text, UCUM code


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _date(dicom_date: str) -> str | None:
    """A DICOM DA as a FHIR date; DICOM gives a study's time without its zone, and a
    FHIR dateTime with a time needs one, so the date alone is said."""
    if len(dicom_date) != 8 or not dicom_date.isdigit():
        return None
    return f"{dicom_date[:4]}-{dicom_date[4:6]}-{dicom_date[6:]}"


def _coding(finding: FindingFacts) -> dict[str, str]:
    coding = {"code": finding.code_value, "display": finding.code_meaning}
    system = CODE_SYSTEMS.get(finding.code_scheme.upper())
    return {"system": system, **coding} if system else coding


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join(parts))}"


def report_bundle(notice: Notification, patient_system: str = "") -> Bundle:
    """The transaction Bundle for ``notice`` (validated); ``patient_system`` is the
    system of the patient's identifier, when the destination knows it."""
    study, critical = notice.study, notice.critical
    kos = notice.key_objects_uid
    patient: dict[str, Any] = {"identifier": {"value": study.patient_id}}
    if patient_system:
        patient["identifier"]["system"] = patient_system
    if study.patient_name:
        patient["display"] = study.patient_name.split("=")[0].replace("^", " ").strip()
    imaging_study = {
        "identifier": {"system": DICOM_UID, "value": f"urn:oid:{study.study_instance_uid}"},
        "display": study.study_description or "imaging study",
    }
    when: dict[str, str] = {}
    if (date := _date(study.study_date)) is not None:
        when["effectiveDateTime"] = date
    model = f"{critical.model_name} {critical.model_version}"
    entries = []
    for finding in critical.findings:
        url = _urn(kos, finding.output)
        unit, code = _QUANTITY.get(finding.unit, (finding.unit, finding.unit))
        observation = {
            "resourceType": "Observation",
            "identifier": [{"system": URI, "value": url}],
            "status": "preliminary",
            "category": [{"coding": [IMAGING]}],
            "code": {"coding": [_coding(finding)], "text": finding.output},
            "subject": patient,
            **when,
            "issued": _instant(critical.detected_at),
            "device": {"display": model},
            "valueQuantity": {"value": finding.value, "unit": unit, "system": UCUM, "code": code},
            "interpretation": [{"coding": [CRITICAL], "text": "critical"}],
            "referenceRange": [{"text": f"below {finding.threshold:g} (not critical)"}],
            "note": [{"text": finding.text}],
            "derivedFrom": [imaging_study],
        }
        entries.append(_entry(url, observation, "Observation", f"{URI}|{url}"))
    code, words = PRIORITY[critical.urgency]
    report = {
        "resourceType": "DiagnosticReport",
        "meta": {"tag": [{"system": ACT_PRIORITY, "code": code, "display": words}]},
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{kos}"}],
        "status": "preliminary",
        "category": [{"coding": [RADIOLOGY]}],
        "code": {"coding": [IMAGING_STUDY], "text": f"Critical finding by {model}"},
        "subject": patient,
        **when,
        "issued": _instant(critical.detected_at),
        "performer": [{"display": model}],
        "result": [{"reference": entry["fullUrl"]} for entry in entries],
        "imagingStudy": [imaging_study],
        "conclusion": "\n".join(f.text for f in critical.findings),
        "conclusionCode": [{"coding": [_coding(f)]} for f in critical.findings],
    }
    entries.append(
        _entry(_urn(kos, "report"), report, "DiagnosticReport", f"{DICOM_UID}|urn:oid:{kos}")
    )
    return Bundle.model_validate(
        {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )


def _entry(url: str, resource: dict[str, Any], kind: str, identifier: str) -> dict[str, Any]:
    return {
        "fullUrl": url,
        "resource": resource,
        "request": {"method": "POST", "url": kind, "ifNoneExist": f"identifier={identifier}"},
    }
