"""Every analysis is a workitem: the node's own jobs' workitems, following their jobs.

Routing creates a job's workitem with it (``for_job``, origin NODE, SCHEDULED). The job
ledger, the one writer of job state, calls ``follow_job`` inside each of its own
transactions, so the workitem moves with the job and its events are written in the
transaction that changed the job:

- QUEUED: SCHEDULED (a job queued again after a lost worker stays IN PROGRESS);
- RUNNING: IN PROGRESS, claimed by the node with a Transaction UID of its own;
- DELIVERING: IN PROGRESS, the results referenced in the Output Information Sequence;
- SUCCEEDED: COMPLETED (performed start and end, the outputs and where to retrieve
  them: the AE titles of the DICOM archives and the URLs of the DICOMweb archives
  the results go to);
- FAILED: CANCELED with the job's error as the Reason For Cancellation. The standard has
  no failed state, and AIW-I has a performer that cannot finish its task cancel it,
  so subscribers learn that the work ended. A job run again (an operator's retry or
  re-analysis) gets a new workitem, as a final one never changes state again.

Only workitems of origin NODE follow a job: a workitem a RIS asked for (or the node
pulled) covers several jobs and is completed by the code that performs it.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db.models import Instance, Job, JobState, ResultObject
from node.db.worklist import UpsState, Workitem, WorkitemOrigin
from node.delivery.destinations import Destination, DicomDestination, StowDestination
from node.ups import attributes as attrs
from node.ups.rows import (
    NODE_PERFORMER,
    change_in,
    create_in,
    dataset_of,
    new_transaction_uid,
    set_in,
)
from node.ups.states import FINAL

_TARGET = {
    JobState.QUEUED: UpsState.SCHEDULED,
    JobState.RUNNING: UpsState.IN_PROGRESS,
    JobState.DELIVERING: UpsState.IN_PROGRESS,
    JobState.SUCCEEDED: UpsState.COMPLETED,
    JobState.FAILED: UpsState.CANCELED,
}
_PROGRESS = {
    JobState.QUEUED: (0, "queued again"),
    JobState.RUNNING: (10, "analysing"),
    JobState.DELIVERING: (90, "delivering the results"),
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    # A model's name may pass the 16 characters of Code Value (SH): Long Code Value
    # (UC, PS3.3 8.8) holds it then, as the standard says, instead of Code Value.
    if len(value) > 16:
        code.LongCodeValue = value
    else:
        code.CodeValue = value
    code.CodingSchemeDesignator, code.CodeMeaning = scheme, meaning[:64]
    return code


def _parameter(concept: tuple[str, str, str], text: str) -> Dataset:
    item = Dataset()
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code(*concept)]
    item.TextValue = text
    return item


def _input_reference(session: Session, study_uid: str, series_pk: int, series_uid: str) -> Dataset:
    item = Dataset()
    item.TypeOfInstances = "DICOM"
    item.StudyInstanceUID = study_uid
    item.SeriesInstanceUID = series_uid
    refs = []
    for sop_class, sop_instance in session.execute(
        select(Instance.sop_class_uid, Instance.sop_instance_uid).where(
            Instance.series_pk == series_pk
        )
    ):
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_instance
        refs.append(ref)
    item.ReferencedSOPSequence = refs
    return item


def job_workitem(session: Session, job: Job) -> Dataset:
    """The UPS a job is: its model as the algorithm asked for, its series as inputs."""
    study = job.series.study
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # names as the index keeps them, in UTF-8
    ds.ProcedureStepState = UpsState.SCHEDULED.value
    ds.ScheduledProcedureStepPriority = attrs.dicom_priority(job.priority)
    ds.ProcedureStepLabel = f"{job.model_name} {job.model_version}"[:64]
    ds.WorklistLabel = attrs.DEFAULT_WORKLIST_LABEL
    ds.InputReadinessState = "READY"
    ds.PatientName = study.patient.patient_name
    ds.PatientID = study.patient.patient_id
    ds.PatientBirthDate = study.patient.birth_date
    ds.PatientSex = study.patient.sex
    ds.StudyInstanceUID = study.study_instance_uid
    ds.AccessionNumber = study.accession_number
    ds.ScheduledWorkitemCodeSequence = [_code(job.model_name, attrs.NODE_SCHEME, job.model_name)]
    ds.ScheduledProcessingParametersSequence = [
        _parameter((*attrs.ALGORITHM_NAME, "Algorithm Name"), job.model_name),
        _parameter(("111003", "DCM", "Algorithm Version"), job.model_version),
    ]
    series = [job.series, *(extra.series for extra in job.inputs)]
    ds.InputInformationSequence = [
        _input_reference(session, study.study_instance_uid, s.id, s.series_instance_uid)
        for s in series
    ]
    return ds


def for_job(session: Session, job: Job) -> Workitem:
    """A new SCHEDULED workitem (origin NODE) for ``job``, linked to it, in ``session``."""
    session.flush()  # the job's inputs and ids
    row = create_in(session, job_workitem(session, job), new_transaction_uid(), WorkitemOrigin.NODE)
    row.priority = job.priority  # STAT too, which DICOM writes HIGH
    job.workitem = row
    return row


def retrieve_places(
    destinations: Iterable[Destination],
    kind: str,
    model_name: str,
    study: str,
    series: str,
    sop: str,
) -> tuple[list[str], list[str]]:
    """Where a result can be retrieved once delivered: AE titles and WADO-RS URLs."""
    titles: list[str] = []
    urls: list[str] = []
    for destination in destinations:
        if not destination.takes(kind, model_name):
            continue
        if isinstance(destination, DicomDestination):
            titles.append(destination.ae.ae_title)
        elif isinstance(destination, StowDestination):
            root = destination.stow_url.rstrip("/")
            urls.append(f"{root}/studies/{study}/series/{series}/instances/{sop}")
    return titles, urls


def outputs_for(
    session: Session, job: Job, series_of: dict[str, str], destinations: Iterable[Destination]
) -> list[Dataset]:
    """The Output Information Sequence items of a job's results (``series_of``: each
    result's SOP Instance UID to its Series Instance UID)."""
    study = job.series.study.study_instance_uid
    chosen = list(destinations)
    items = []
    results = session.scalars(
        select(ResultObject).where(ResultObject.job_pk == job.id).order_by(ResultObject.id)
    )
    for result in results:
        series = series_of.get(result.sop_instance_uid, "")
        titles, urls = retrieve_places(
            chosen, result.kind, job.model_name, study, series, result.sop_instance_uid
        )
        items.append(
            attrs.output_reference(study, series, result.sop_class_uid, result.sop_instance_uid,
                                   titles, urls)
        )  # fmt: skip
    return items


def _outputs_of(dataset: Dataset) -> list[Dataset]:
    performed = dataset.get("UnifiedProcedureStepPerformedProcedureSequence") or []
    return list(performed[0].get("OutputInformationSequence") or []) if performed else []


def _progress(percent: int, description: str) -> Dataset:
    item = Dataset()
    item.ProcedureStepProgress = str(percent)
    item.ProcedureStepProgressDescription = description[:1024]
    changes = Dataset()
    changes.ProcedureStepProgressInformationSequence = [item]
    return changes


def follow_job(
    session: Session,
    job_id: int,
    series_of: dict[str, str] | None = None,
    destinations: Iterable[Destination] = (),
) -> None:
    """Bring the job's own workitem in line with the job's state (module docstring),
    in the ledger's ``session``. ``series_of`` and ``destinations``: given when the
    job's results were just kept (``JobLedger.analyzed``)."""
    job = session.get_one(Job, job_id)
    row = job.workitem
    if row is not None and row.origin is not WorkitemOrigin.NODE:
        return  # performed as a whole by whoever performs that workitem
    target = _TARGET[job.state]
    carried: list[Dataset] = []
    if row is None or (row.state in FINAL and row.state is not target):
        carried = _outputs_of(dataset_of(row)) if row is not None else []
        row = for_job(session, job)
    if row.state is target and target in FINAL:
        return
    if target is UpsState.SCHEDULED:
        if row.state is UpsState.IN_PROGRESS:  # queued again: a UPS never goes back
            set_in(session, row, _progress(*_PROGRESS[JobState.QUEUED]), row.transaction_uid)
        return
    if row.state is UpsState.SCHEDULED:
        change_in(session, row, UpsState.IN_PROGRESS, new_transaction_uid(), NODE_PERFORMER)
    dataset = dataset_of(row)
    outputs = (
        outputs_for(session, job, series_of, destinations) if series_of is not None
        else _outputs_of(dataset) or carried
    )  # fmt: skip
    if target is UpsState.IN_PROGRESS:
        changes = _progress(*_PROGRESS[job.state])
        if job.state is JobState.DELIVERING:
            performed = attrs.performed_procedure(job.started_at, None, outputs)
            del performed[0].PerformedProcedureStepEndDateTime  # not ended yet
            changes.UnifiedProcedureStepPerformedProcedureSequence = performed
        set_in(session, row, changes, row.transaction_uid)
        return
    changes = Dataset()
    changes.UnifiedProcedureStepPerformedProcedureSequence = attrs.performed_procedure(
        job.started_at, job.finished_at, outputs
    )
    if target is UpsState.CANCELED:
        row.cancel_reason = job.error[:4000] or "the analysis failed"
        changes.ReasonForCancellation = row.cancel_reason
    set_in(session, row, changes, row.transaction_uid)
    change_in(session, row, target, row.transaction_uid, NODE_PERFORMER)
