"""Workitems as a RIS asks for an analysis: the N-CREATE data set of a Unified Procedure
Step naming a study (Input Information Sequence, with where to retrieve it) and, when
wanted, the model (Scheduled Processing Parameters, (DCM, 111001, "Algorithm Name")); and
the RIS's own DIMSE calls: N-CREATE and N-GET over an association of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association


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


UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"


@contextmanager
def ris_association(port: int, called_ae: str = "AINODE") -> Iterator[Association]:
    """An association of a RIS (pynetdicom, AE title RIS) with a UPS SCP on loopback."""
    ae = AE(ae_title="RIS")
    ae.add_requested_context(UPS_PUSH)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert assoc.is_established, f"the UPS SCP on port {port} did not accept the RIS"
    try:
        yield assoc
    finally:
        assoc.release()


def create_workitem(port: int, request: Dataset) -> str:
    """N-CREATE ``request`` under a new SOP Instance UID; that UID."""
    uid = generate_uid()
    with ris_association(port) as assoc:
        status, _ = assoc.send_n_create(request, UPS_PUSH, uid)
    assert status.Status == 0x0000, status
    return uid


def get_workitem(port: int, uid: str, keys: list[int]) -> Dataset:
    """N-GET of ``keys`` of workitem ``uid``."""
    with ris_association(port) as assoc:
        status, workitem = assoc.send_n_get(keys, UPS_PUSH, uid)
    assert status.Status == 0x0000 and workitem is not None, status
    return workitem
