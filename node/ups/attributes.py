"""What a workitem holds: its attributes checked at creation, the columns the node
queries by, the final-state requirements, and the Event Information of its events.

A workitem's attributes are kept in the DICOM JSON model (PS3.18 F.2) on its row;
the Transaction UID never is (it lives in its own column and is never returned).

The columns come from the data set as follows (the choices the standard leaves open):

- ``priority``: Scheduled Procedure Step Priority (0074,1200);
- ``label``, ``worklist_label``: Procedure Step Label (0074,1204), Worklist Label
  (0074,1202) (the node's own when the creator gives none);
- ``study_instance_uid``: the first Study Instance UID in Input Information Sequence
  (0040,4021), else the data set's own Study Instance UID (0020,000D);
- ``requested_model``: the Text Value of the Scheduled Processing Parameters Sequence
  (0074,1210) item named (DCM, 111001, "Algorithm Name"), else the Code Value of a
  Scheduled Workitem Code Sequence (0040,4018) item in the coding scheme ``99AINODE``;
  "" (any model that accepts the study) when neither is there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from node.db.declarative import utcnow
from node.db.worklist import UpsPriority, UpsState
from node.ups.states import UpsError, UpsStatus

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"  # every workitem is an instance of this class
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"  # the UPS Global Subscription Instance
FILTERED_GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"

NODE_SCHEME = "99AINODE"  # a private coding scheme: Code Value = a model's name
ALGORITHM_NAME = ("111001", "DCM")  # (Code Value, Coding Scheme Designator)
DEFAULT_WORKLIST_LABEL = "AINODE"

# Event Type IDs, PS3.4 CC.2.4.2.
STATE_REPORT = 1
CANCEL_REQUESTED = 2
PROGRESS_REPORT = 3
SCP_STATUS_CHANGE = 4
ASSIGNED = 5

TRANSACTION_UID = Tag(0x0008, 0x1195)
# Never changed by N-SET (PS3.4 Table CC.2.5-3, "Not allowed" in the N-SET column).
NOT_SETTABLE = frozenset(
    Tag(keyword)
    for keyword in ("SOPClassUID", "SOPInstanceUID", "ProcedureStepState", "TransactionUID")
)
# Setting these assigns the workitem to a station or a person: a UPS Assigned event.
ASSIGNING = frozenset(
    Tag(keyword)
    for keyword in ("ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence")
)
# Type 2 at N-CREATE: present, perhaps empty, in every workitem.
_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AdmissionID",
    "ScheduledWorkitemCodeSequence",
    "InputInformationSequence",
    "ReferencedRequestSequence",
    "ScheduledStationNameCodeSequence",
    "ScheduledHumanPerformersSequence",
)


def to_json(dataset: Dataset) -> dict:
    """The data set in the DICOM JSON model (what the row keeps)."""
    return json.loads(dataset.to_json())


def from_json(model: dict) -> Dataset:
    return Dataset.from_json(model)


def dicom_datetime(moment: datetime | None = None) -> str:
    """A DT value (UTC, with its offset) for ``moment`` (now when None)."""
    return (moment or utcnow()).strftime("%Y%m%d%H%M%S+0000")


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def prepare_new(dataset: Dataset, uid: str) -> Dataset:
    """The workitem an N-CREATE asks for, checked (Table CC.2.5-3) and completed.

    Refused (``UpsError``): a state other than SCHEDULED (C309), a Transaction UID
    (it comes only with a claim), a priority outside the enumerated values, no
    Procedure Step Label or Input Readiness State. Filled when absent: the Scheduled
    Procedure Step Start DateTime (now), the Worklist Label (the node's), the Type 2
    attributes (empty).
    """
    new = Dataset()
    new.update(dataset)
    state = _text(new, "ProcedureStepState")
    if not state:
        raise UpsError(UpsStatus.MISSING_ATTRIBUTE, "Procedure Step State (0074,1000) is missing")
    if state != UpsState.SCHEDULED.value:
        raise UpsError(UpsStatus.CREATED_NOT_SCHEDULED, f"a new UPS must be SCHEDULED, not {state}")
    if TRANSACTION_UID in new:
        raise UpsError(UpsStatus.INVALID_ATTRIBUTE_VALUE, "a new UPS has no Transaction UID")
    priority = _text(new, "ScheduledProcedureStepPriority")
    if not priority:
        raise UpsError(UpsStatus.MISSING_ATTRIBUTE, "Scheduled Procedure Step Priority is missing")
    if priority not in {p.value for p in UpsPriority}:
        raise UpsError(
            UpsStatus.INVALID_ATTRIBUTE_VALUE,
            f"Scheduled Procedure Step Priority {priority!r} is not HIGH, MEDIUM or LOW",
        )
    for keyword in ("ProcedureStepLabel", "InputReadinessState"):
        if not _text(new, keyword):
            raise UpsError(UpsStatus.MISSING_ATTRIBUTE, f"{keyword} is missing")
    if not _text(new, "ScheduledProcedureStepStartDateTime"):
        new.ScheduledProcedureStepStartDateTime = dicom_datetime()
    if not _text(new, "WorklistLabel"):
        new.WorklistLabel = DEFAULT_WORKLIST_LABEL
    for keyword in _TYPE_2:
        if keyword not in new:
            setattr(new, keyword, [] if keyword.endswith("Sequence") else "")
    new.SOPClassUID = UPS_PUSH
    new.SOPInstanceUID = uid
    return new


def priority_of(dataset: Dataset) -> UpsPriority:
    """Its priority. PS3.3 enumerates HIGH, MEDIUM and LOW; STAT, the node's own rank
    above HIGH (routing rules), is accepted too and written HIGH where DICOM shows it
    (``dicom_priority``)."""
    text = _text(dataset, "ScheduledProcedureStepPriority")
    return UpsPriority(text) if text in {p.value for p in UpsPriority} else UpsPriority.MEDIUM


def dicom_priority(priority: UpsPriority) -> str:
    """The (0074,1200) value for ``priority``: STAT is not a DICOM value, HIGH is."""
    return UpsPriority.HIGH.value if priority is UpsPriority.STAT else priority.value


def study_of(dataset: Dataset) -> str:
    for item in dataset.get("InputInformationSequence") or []:
        uid = _text(item, "StudyInstanceUID")
        if uid:
            return uid
    return _text(dataset, "StudyInstanceUID")


def requested_model_of(dataset: Dataset) -> str:
    for item in dataset.get("ScheduledProcessingParametersSequence") or []:
        for concept in item.get("ConceptNameCodeSequence") or []:
            if (_text(concept, "CodeValue"), _text(concept, "CodingSchemeDesignator")) == (
                ALGORITHM_NAME
            ):
                return _text(item, "TextValue")[:64]
    for code in dataset.get("ScheduledWorkitemCodeSequence") or []:
        if _text(code, "CodingSchemeDesignator") == NODE_SCHEME:
            return (_text(code, "CodeValue") or _text(code, "LongCodeValue"))[:64]
    return ""


def columns(dataset: Dataset) -> dict[str, object]:
    """The Workitem columns a data set decides (module docstring)."""
    return {
        "priority": priority_of(dataset),
        "label": _text(dataset, "ProcedureStepLabel")[:64],
        "worklist_label": _text(dataset, "WorklistLabel")[:64],
        "study_instance_uid": study_of(dataset)[:64],
        "requested_model": requested_model_of(dataset),
    }


def progress_of(dataset: Dataset) -> tuple[int | None, str]:
    """Procedure Step Progress (percent) and its description, as the workitem says."""
    for item in dataset.get("ProcedureStepProgressInformationSequence") or []:
        text = _text(item, "ProcedureStepProgress")
        try:
            percent = round(float(text)) if text else None
        except ValueError:
            percent = None
        return percent, _text(item, "ProcedureStepProgressDescription")
    return None, ""


def progress_item(dataset: Dataset) -> Dataset:
    """The Progress Information item of ``dataset``, made when absent."""
    if not dataset.get("ProcedureStepProgressInformationSequence"):
        dataset.ProcedureStepProgressInformationSequence = [Dataset()]
    return dataset.ProcedureStepProgressInformationSequence[0]


def final_state_refusal(dataset: Dataset, target: UpsState) -> str | None:
    """What a workitem lacks to become COMPLETED (Table CC.2.5-3, Final State column);
    None when nothing. A cancel's requirements the provider fills itself (``canceled``)."""
    if target is not UpsState.COMPLETED:
        return None
    performed = dataset.get("UnifiedProcedureStepPerformedProcedureSequence") or []
    if not performed:
        return "Unified Procedure Step Performed Procedure Sequence (0074,1216) is missing"
    item = performed[0]
    for keyword in ("PerformedProcedureStepStartDateTime", "PerformedProcedureStepEndDateTime"):
        if not _text(item, keyword):
            return f"{keyword} is missing in the Performed Procedure Sequence"
    if "OutputInformationSequence" not in item:
        return "Output Information Sequence (0040,4033) is missing (it may be empty)"
    return None


def canceled(dataset: Dataset, reason: str) -> None:
    """Fill what a CANCELED workitem must hold: the cancellation time and its reason."""
    item = progress_item(dataset)
    item.ProcedureStepCancellationDateTime = dicom_datetime()
    if reason and not _text(dataset, "ReasonForCancellation"):
        dataset.ReasonForCancellation = reason[:10240]
    if not dataset.get("UnifiedProcedureStepPerformedProcedureSequence"):
        performed = Dataset()
        performed.PerformedProcedureStepEndDateTime = dicom_datetime()
        performed.OutputInformationSequence = []
        dataset.UnifiedProcedureStepPerformedProcedureSequence = [performed]


def performed_procedure(
    started: datetime | None, ended: datetime | None, outputs: Iterable[Dataset]
) -> Sequence:
    """A Unified Procedure Step Performed Procedure Sequence that meets the COMPLETED
    requirements: start and end DateTime, and the Output Information Sequence."""
    item = Dataset()
    item.PerformedProcedureStepStartDateTime = dicom_datetime(started)
    item.PerformedProcedureStepEndDateTime = dicom_datetime(ended)
    item.OutputInformationSequence = list(outputs)
    return Sequence([item])


def output_reference(
    study_uid: str,
    series_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    retrieve_ae_titles: Iterable[str] = (),
    retrieve_urls: Iterable[str] = (),
) -> Dataset:
    """One Output Information Sequence item (Referenced Instances and Access Macro)."""
    item = Dataset()
    item.TypeOfInstances = "DICOM"
    item.StudyInstanceUID = study_uid
    item.SeriesInstanceUID = series_uid
    sop = Dataset()
    sop.ReferencedSOPClassUID = sop_class_uid
    sop.ReferencedSOPInstanceUID = sop_instance_uid
    item.ReferencedSOPSequence = [sop]
    titles = list(dict.fromkeys(retrieve_ae_titles))
    if titles:
        retrieval = Dataset()
        retrieval.RetrieveAETitle = titles
        item.DICOMRetrievalSequence = [retrieval]
    urls = [Dataset() for _ in retrieve_urls]
    for entry, url in zip(urls, retrieve_urls, strict=True):
        entry.RetrieveURL = url
    if urls:
        item.WADORSRetrievalSequence = urls
    return item


# Event Information, PS3.4 Table CC.2.4-1 --------------------------------------------


def state_report(dataset: Dataset) -> Dataset:
    info = Dataset()
    info.ProcedureStepState = _text(dataset, "ProcedureStepState")
    info.InputReadinessState = _text(dataset, "InputReadinessState") or "READY"
    if info.ProcedureStepState == UpsState.CANCELED.value:
        info.ReasonForCancellation = _text(dataset, "ReasonForCancellation")
        if dataset.get("ProcedureStepDiscontinuationReasonCodeSequence"):
            info.ProcedureStepDiscontinuationReasonCodeSequence = (
                dataset.ProcedureStepDiscontinuationReasonCodeSequence
            )
    return info


def cancel_requested(requester: str, request: Dataset) -> Dataset:
    info = Dataset()
    info.RequestingAE = requester[:16]
    for keyword in (
        "ReasonForCancellation",
        "ProcedureStepDiscontinuationReasonCodeSequence",
        "ContactURI",
        "ContactDisplayName",
    ):
        if keyword in request:
            setattr(info, keyword, request[keyword].value)
    return info


def progress_report(dataset: Dataset) -> Dataset:
    info = Dataset()
    info.ProcedureStepProgressInformationSequence = dataset.get(
        "ProcedureStepProgressInformationSequence", []
    )
    return info


def assigned(dataset: Dataset) -> Dataset:
    info = Dataset()
    for keyword in ("ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence"):
        setattr(info, keyword, dataset.get(keyword) or [])
    return info


def tags_of(keys: Iterable[int | BaseTag]) -> list[BaseTag]:
    return [Tag(key) for key in keys]
