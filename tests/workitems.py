"""Workitems as a RIS asks for an analysis: the N-CREATE data set of a Unified Procedure
Step naming a study (Input Information Sequence, with where to retrieve it) and, when
wanted, the model (Scheduled Processing Parameters, (DCM, 111001, "Algorithm Name"))."""

from __future__ import annotations

from pydicom import Dataset


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def analysis_request(
    study_uid: str,
    *,
    retrieve_ae_title: str = "",
    wado_url: str = "",
    model: str = "",
    priority: str = "MEDIUM",
    label: str = "AI analysis",
    patient_id: str = "",
) -> Dataset:
    """A SCHEDULED workitem asking the node to analyse ``study_uid``."""
    ds = Dataset()
    ds.ProcedureStepState = "SCHEDULED"
    ds.ScheduledProcedureStepPriority = priority
    ds.ProcedureStepLabel = label
    ds.WorklistLabel = "AI"
    ds.InputReadinessState = "READY"
    ds.PatientName = ""
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.ScheduledProcedureStepStartDateTime = "20260101080000"
    study = Dataset()
    study.TypeOfInstances = "DICOM"
    study.StudyInstanceUID = study_uid
    study.ReferencedSOPSequence = []
    if retrieve_ae_title:
        where = Dataset()
        where.RetrieveAETitle = retrieve_ae_title
        study.DICOMRetrievalSequence = [where]
    if wado_url:
        where = Dataset()
        where.RetrieveURL = f"{wado_url.rstrip('/')}/studies/{study_uid}"
        study.WADORSRetrievalSequence = [where]
    ds.InputInformationSequence = [study]
    ds.ScheduledWorkitemCodeSequence = [_code("110005", "DCM", "Interpretation")]
    if model:
        parameter = Dataset()
        parameter.ValueType = "TEXT"
        parameter.ConceptNameCodeSequence = [_code("111001", "DCM", "Algorithm Name")]
        parameter.TextValue = model
        ds.ScheduledProcessingParametersSequence = [parameter]
    return ds
