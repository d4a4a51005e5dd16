"""The gate's rules for Key Object Selection documents (KO), beyond what dciodvfy checks.

dciodvfy checks the KOS IOD's modules; it does not check TID 2010 content nor what the
node promises of a KOS flagging a critical finding: a document title of CID 7010 that
is not one of the IHE IOCM rejection titles (an archive hides the images such a KOS
names), TID 2010 as the template, a Key Object Description saying the finding, the
model as device observer, at least one image, every referenced instance in the
evidence, and, given the source series, only its images, in its study and for its
patient, in a series of its own. ``workers.encode.conformance`` runs these in the gate.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom import Dataset

KOS_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
# CID 7010 "Key Object Selection Document Titles" (PS3.16), every code of it.
DOCUMENT_TITLES = {
    *(str(code) for code in range(113000, 113011)),
    "113013", "113018", "113020", "113021",
    *(str(code) for code in range(113030, 113040)),
}  # fmt: skip
# Titles of CID 7011 "Rejected for Quality Reasons" and the other IOCM rejection notes:
# an archive that receives a KOS titled so hides or deletes the images it names.
REJECTION_TITLES = {"113001", "113037", "113038", "113039"}
_KEY_OBJECT_DESCRIPTION = "113012"
_OBSERVER_TYPE = "121005"
_DEVICE = "121007"
_DEVICE_OBSERVER_UID = "121012"


def _code(item: Dataset, keyword: str) -> tuple[str, str]:
    codes = item.get(keyword)
    if not codes:
        return "", ""
    return str(codes[0].get("CodeValue", "")), str(codes[0].get("CodingSchemeDesignator", ""))


def check_key_objects(ko: Dataset, sources: Sequence[Dataset] | None = None) -> list[str]:
    """The problems with ``ko``, a KOS flagging critical findings; empty means none.

    ``sources`` (the source series' headers) adds the checks that need them.
    """
    problems: list[str] = []
    if str(ko.get("SOPClassUID", "")) != KOS_STORAGE or ko.get("Modality") != "KO":
        problems.append(
            f"KO: SOP Class {ko.get('SOPClassUID')!r} / Modality {ko.get('Modality')!r} "
            "is not Key Object Selection Document Storage / KO"
        )
    title, scheme = _code(ko, "ConceptNameCodeSequence")
    if scheme != "DCM" or title not in DOCUMENT_TITLES:
        problems.append(f"KO: document title ({title}, {scheme}) is not from CID 7010")
    elif title in REJECTION_TITLES:
        problems.append(f"KO: document title {title} is a rejection note: archives hide the images")
    if not any(
        str(t.get("TemplateIdentifier", "")) == "2010" and t.get("MappingResource") == "DCMR"
        for t in ko.get("ContentTemplateSequence", [])
    ):
        problems.append("KO: ContentTemplateSequence lacks Template Identifier 2010 (DCMR)")
    items = list(ko.get("ContentSequence", []))
    descriptions = [
        i for i in items if _code(i, "ConceptNameCodeSequence") == (_KEY_OBJECT_DESCRIPTION, "DCM")
    ]
    if not descriptions or not str(descriptions[0].get("TextValue", "")).strip():
        problems.append("KO: TID 2010 Key Object Description (113012) is missing or empty")
    problems.extend(_check_observer(items))
    problems.extend(_check_references(ko, items, sources))
    return problems


def _check_observer(items: list[Dataset]) -> list[str]:
    observers = [i for i in items if _code(i, "ConceptNameCodeSequence") == (_OBSERVER_TYPE, "DCM")]
    if not observers or _code(observers[0], "ConceptCodeSequence")[0] != _DEVICE:
        return ["KO: the model is not the device observer (TID 1002 Observer Type Device)"]
    uids = [
        i for i in items if _code(i, "ConceptNameCodeSequence") == (_DEVICE_OBSERVER_UID, "DCM")
    ]
    if not uids or not str(uids[0].get("UID", "")):
        return ["KO: TID 1004 device observer lacks its Device Observer UID (121012)"]
    return []


def _check_references(
    ko: Dataset, items: list[Dataset], sources: Sequence[Dataset] | None
) -> list[str]:
    referenced = [
        str(item.ReferencedSOPSequence[0].get("ReferencedSOPInstanceUID", ""))
        for item in items
        if item.get("ValueType") in ("IMAGE", "COMPOSITE") and item.get("ReferencedSOPSequence")
    ]
    if not referenced:
        return ["KO: references no image"]
    evidence = {
        str(sop.get("ReferencedSOPInstanceUID", ""))
        for study in ko.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.get("ReferencedSeriesSequence", [])
        for sop in series.get("ReferencedSOPSequence", [])
    }
    problems = [
        f"KO: image {uid} is not in the evidence" for uid in referenced if uid not in evidence
    ]
    if not sources:
        return problems
    known = {str(s.SOPInstanceUID) for s in sources}
    problems.extend(
        f"KO: image {uid} is not one of the source images" for uid in referenced if uid not in known
    )
    source = sources[0]
    for keyword, what in (("StudyInstanceUID", "study"), ("PatientID", "patient")):
        if str(ko.get(keyword, "")) != str(source.get(keyword, "")):
            problems.append(f"KO: {keyword} {ko.get(keyword)!r} is not the source {what}'s")
    if str(ko.get("SeriesInstanceUID", "")) == str(source.get("SeriesInstanceUID", "")):
        problems.append("KO: Series Instance UID is the source series', not a new one")
    return problems
