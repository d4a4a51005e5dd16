"""Critical findings as an HL7 v2.5.1 ORU^R01 message (unsolicited observation result).

The message ``node.delivery.mllp`` sends to a reading worklist or RIS:

- MSH: the node as sending application, ORU^R01^ORU_R01, version 2.5.1, original
  acknowledgement mode (the receiver answers every message with an ACK);
- PID: patient identifier (with its issuer) and name, birth date, sex, from the KOS;
- ORC (RE) and OBR: the accession number as placer and filler order number, the
  imaging study (LOINC 18748-4), the study's date, result status P (preliminary: no
  person has reviewed what the model found), the urgency as the priority of OBR-27
  (component 6, for receivers before 2.5) and of TQ1-9, which 2.5 prefers (HL7 table
  0485: S stat, A ASAP, R routine);
- one OBX per finding: NM, coded by the finding's code (the manifest's SNOMED CT or
  DICOM code), its value (probability, or volume in mL), the range that is not
  critical, abnormal flag AA (critically abnormal, table 0078), the model as
  equipment, each followed by an NTE with the finding in words; then an OBX with the
  Study Instance UID (DCM 110180), so a viewer can open the study.

Pure: builds text, sends nothing. The hl7 package parses it back in the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime

from node.db.worklist import UpsPriority
from node.delivery.critical_facts import FindingFacts
from node.delivery.notification import Notification

VERSION = "2.5.1"
CHARACTER_SET = "UNICODE UTF-8"  # MSH-18: names beyond ASCII are sent as UTF-8
SEGMENT_SEPARATOR = "\r"
# HL7 table 0485 "Extended Priority Codes": S stat, A ASAP, R routine.
PRIORITY = {
    UpsPriority.STAT: ("S", "Stat"),
    UpsPriority.HIGH: ("A", "ASAP"),
    UpsPriority.MEDIUM: ("R", "Routine"),
    UpsPriority.LOW: ("R", "Routine"),
}
CRITICALLY_ABNORMAL = "AA"  # HL7 table 0078 "Abnormal Flags"
PRELIMINARY = "P"  # OBR-25 (table 0123) and OBX-11 (table 0085)
IMAGING_STUDY = "18748-4^Diagnostic imaging study^LN"
STUDY_INSTANCE_UID = "110180^Study Instance UID^DCM"
UNITS = {"ml": "mL^milliliter^UCUM", "": "1^no units^UCUM"}
_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


def escape(value: object, *, lines: bool = False) -> str:
    """``value`` as an HL7 field's text with the default delimiters escaped; line
    breaks become ``\\.br\\`` where ``lines`` (FT fields), else spaces."""
    text = "".join(_ESCAPES.get(char, char) for char in str(value))
    breaks = "\\.br\\" if lines else " "
    return text.replace("\r\n", breaks).replace("\n", breaks).replace("\r", breaks)


def control_id(notice: Notification) -> str:
    """MSH-10, 20 characters: the same for the same findings of the same KOS, so a
    receiver that sees a retried message twice can tell; new when the findings change."""
    return notice.identity[:20].upper()


def hl7_datetime(date: str, time: str = "") -> str:
    """A DICOM DA and TM as an HL7 DTM (to the second); "" without a date."""
    digits = "".join(c for c in time.split(".")[0] if c.isdigit())
    return f"{date}{digits[:6]}" if date else ""


def _now(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def person_name(dicom_name: str) -> str:
    """A DICOM PN (Family^Given^Middle^Prefix^Suffix, its alphabetic group) as an HL7
    XPN (Family^Given^Middle^Suffix^Prefix)."""
    parts = (dicom_name.split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (escape(p) for p in parts)
    return "^".join([family, given, middle, suffix, prefix]).rstrip("^")


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by number (1-based; MSH-1 is the separator itself)."""
    last = max(fields, default=0)
    return "|".join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def oru_r01(
    notice: Notification,
    *,
    sending_application: str,
    sending_facility: str = "",
    receiving_application: str = "",
    receiving_facility: str = "",
    now: datetime | None = None,
) -> str:
    """The ORU^R01 message telling ``notice``'s findings (segments separated by CR)."""
    study, critical = notice.study, notice.critical
    moment = now or datetime.now(UTC)
    observed = hl7_datetime(study.study_date, study.study_time)
    code, words = PRIORITY[critical.urgency]
    accession = escape(study.accession_number)
    patient_id = escape(study.patient_id)
    if study.issuer_of_patient_id:
        patient_id += f"^^^{escape(study.issuer_of_patient_id)}"
    msh = "MSH|^~\\&|" + "|".join(
        [
            escape(sending_application),
            escape(sending_facility),
            escape(receiving_application),
            escape(receiving_facility),
            _now(moment),
            "",
            "ORU^R01^ORU_R01",
            control_id(notice),
            "P",
            VERSION,
            "",
            "",
            "",  # MSH-15/16 empty: original acknowledgement mode
            "",
            "",
            CHARACTER_SET,
        ]
    )
    segments = [
        msh,
        segment("PID", {1: "1", 3: patient_id, 5: person_name(study.patient_name),
                        7: escape(study.birth_date), 8: escape(study.sex)}),
        segment("ORC", {1: "RE", 2: accession, 3: accession, 5: "CM"}),
        segment("OBR", {1: "1", 2: accession, 3: accession, 4: IMAGING_STUDY, 7: observed,
                        22: _now(critical.detected_at), 24: "RAD", 25: PRELIMINARY,
                        27: f"^^^^^{code}"}),
        segment("TQ1", {1: "1", 9: f"{code}^{words}^HL70485"}),
    ]  # fmt: skip
    model = escape(f"{critical.model_name} {critical.model_version}")
    for number, finding in enumerate(critical.findings, start=1):
        segments.append(_observation(number, finding, observed, model, critical.detected_at))
        segments.append(
            segment("NTE", {1: str(number), 2: "L", 3: escape(finding.text, lines=True)})
        )
    segments.append(
        segment("OBX", {1: str(len(critical.findings) + 1), 2: "ST", 3: STUDY_INSTANCE_UID,
                        5: escape(study.study_instance_uid), 11: PRELIMINARY})
    )  # fmt: skip
    return SEGMENT_SEPARATOR.join(segments)


def _observation(
    number: int, finding: FindingFacts, observed: str, model: str, detected: datetime
) -> str:
    code = "^".join(
        escape(part) for part in (finding.code_value, finding.code_meaning, finding.code_scheme)
    )
    return segment(
        "OBX",
        {1: str(number), 2: "NM", 3: code, 4: str(number), 5: f"{finding.value:g}",
         6: UNITS.get(finding.unit, escape(finding.unit)), 7: f"<{finding.threshold:g}",
         8: CRITICALLY_ABNORMAL, 11: PRELIMINARY, 14: observed, 18: model,
         19: _now(detected)},
    )  # fmt: skip
