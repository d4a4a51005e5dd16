"""Workitems as a RIS writes them, for the UPS tests: an N-CREATE data set, progress, the
performed procedure that completes one; and a routed job, as the receive path and routing
leave it, whose workitem the ledger then moves."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset

from models.manifest import ModelManifest
from models.registry import ModelPackage, ModelRegistry
from node.db.models import Job, Series
from node.db.session import SessionFactory, transaction
from node.index import InstanceHeader, Received, index_instance
from node.routing import route_series
from tests.workitems import analysis_request

CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def scheduled(
    label: str = "CT lung nodules",
    priority: str = "MEDIUM",
    study: str = "1.2.826.0.1.3680043.8.498.1",
    patient: str = "Doe^Jane",
    model: str = "",
) -> Dataset:
    """A UPS as a RIS asks for one (``tests.workitems``), naming a series and an image too."""
    ds = analysis_request(study, model=model, priority=priority, label=label, patient_id="P-1")
    ds.ScheduledProcedureStepStartDateTime = "20240102080000"
    ds.PatientName = patient
    del ds.ScheduledWorkitemCodeSequence  # not needed: the matching tests leave it out
    item = ds.InputInformationSequence[0]
    item.SeriesInstanceUID = study + ".1"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT
    ref.ReferencedSOPInstanceUID = study + ".1.1"
    item.ReferencedSOPSequence = [ref]
    return ds


def progress(percent: int, description: str, transaction_uid: str | None = None) -> Dataset:
    item = Dataset()
    item.ProcedureStepProgress = str(percent)
    item.ProcedureStepProgressDescription = description
    changes = Dataset()
    changes.ProcedureStepProgressInformationSequence = [item]
    if transaction_uid:
        changes.TransactionUID = transaction_uid
    return changes


def performed(study: str, transaction_uid: str | None = None) -> Dataset:
    """What a performer sets before COMPLETED: start, end, one output (a SEG)."""
    output = Dataset()
    output.TypeOfInstances = "DICOM"
    output.StudyInstanceUID = study
    output.SeriesInstanceUID = study + ".9"
    ref = Dataset()
    ref.ReferencedSOPClassUID = SEG
    ref.ReferencedSOPInstanceUID = study + ".9.1"
    output.ReferencedSOPSequence = [ref]
    item = Dataset()
    item.PerformedProcedureStepStartDateTime = "20240102080500"
    item.PerformedProcedureStepEndDateTime = "20240102081000"
    item.OutputInformationSequence = [output]
    changes = Dataset()
    changes.UnifiedProcedureStepPerformedProcedureSequence = [item]
    if transaction_uid:
        changes.TransactionUID = transaction_uid
    return changes


def ct_manifest(name: str = "ct-model") -> ModelManifest:
    return ModelManifest.model_validate(
        {
            "name": name,
            "version": "1.0.0",
            "title": name,
            "task": "classification",
            "accepts": {"modality": ["CT"]},
            "network": {"architecture": "x", "weights": "w.pt", "sha256": "0" * 64},
            "outputs": {
                "classes": [{"name": "c", "finding": {"value": "1", "scheme": "S", "meaning": "m"}}]
            },
        }
    )


def routed_job(sessions: SessionFactory, tmp_path: Path, study: str = "1.2.3") -> int:
    """Two CT instances received (through the index) and their series routed to a CT
    model, in routing's own transaction; the job's id."""
    for number in (1, 2):
        ds = Dataset()
        ds.SOPClassUID = CT
        ds.SOPInstanceUID = f"{study}.1.{number}"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = f"{study}.1"
        ds.Modality = "CT"
        ds.PatientID = "P1"
        ds.PatientName = "Roe^Richard"
        header = InstanceHeader.from_dataset(ds, "1.2.840.10008.1.2.1")
        received = Received(size=10, digest=ds.SOPInstanceUID, calling_aet="CT1",
                            duplicate_policy="keep_first")  # fmt: skip
        index_instance(sessions, header, received, place=lambda: None, unplace=lambda: None)
    registry = ModelRegistry(packages=[ModelPackage(tmp_path / "m", ct_manifest())])
    with transaction(sessions) as session:
        series = session.query(Series).filter_by(series_instance_uid=f"{study}.1").one()
        verdict = route_series(session, series, registry)
        assert len(verdict.jobs) == 1
        job: Job = verdict.jobs[0]
        session.flush()
        return job.id
