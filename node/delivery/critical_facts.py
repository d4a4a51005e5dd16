"""What a notification of a critical finding says, gathered for the sends.

A notification (``hl7``, ``fhir``, ``webhook``) is the delivery of a job's Key Object
Selection document. Its send gets the KO file and, on the ``Outgoing`` item, the job's
:class:`CriticalFacts`: the finding(s) from the job's ``CriticalFinding`` rows and the
model, filled by the delivery pass (``node.delivery.deliver``) with
:func:`critical_facts`. The patient and study come from the KO file itself
(:func:`study_facts`), which copies them from the source images.

This module imports nothing of ``node.delivery`` but the tables, so ``transports``
can carry its dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from node.db.findings import CriticalFinding
from node.db.models import Job
from node.db.session import SessionFactory
from node.db.worklist import UpsPriority


@dataclass(frozen=True)
class FindingFacts:
    """One critical rule that fired: a ``CriticalFinding`` row as the sends read it."""

    id: int
    output: str  # the manifest's class or segment name
    code_value: str
    code_scheme: str
    code_meaning: str
    value: float  # a probability, or a volume in ml
    unit: str  # "" (probability) or "ml"
    threshold: float
    urgency: UpsPriority
    text: str  # the finding in words


@dataclass(frozen=True)
class CriticalFacts:
    """A job's critical findings and the model that found them."""

    job_id: int
    model_name: str
    model_version: str
    detected_at: datetime
    findings: tuple[FindingFacts, ...]

    @property
    def urgency(self) -> UpsPriority:
        """The most urgent of the findings (STAT before HIGH before MEDIUM before LOW)."""
        return min((f.urgency for f in self.findings), key=lambda u: u.rank)


@dataclass(frozen=True)
class StudyFacts:
    """The patient and study of a KO file, and the KO's own identity."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str  # DICOM PN: Family^Given^Middle^Prefix^Suffix
    birth_date: str  # DICOM DA, or ""
    sex: str  # M, F, O or ""
    study_instance_uid: str
    accession_number: str
    study_date: str
    study_time: str
    study_description: str
    sop_instance_uid: str  # the KOS's
    series_instance_uid: str  # the KOS's


def critical_facts(sessions: SessionFactory, job_id: int) -> CriticalFacts | None:
    """The job's critical findings, or None when it has none."""
    with sessions() as session:
        job = session.get(Job, job_id)
        rows = session.scalars(
            select(CriticalFinding)
            .where(CriticalFinding.job_pk == job_id)
            .order_by(CriticalFinding.id)
        ).all()
        if job is None or not rows:
            return None
        return CriticalFacts(
            job_id=job_id,
            model_name=job.model_name,
            model_version=job.model_version,
            detected_at=rows[0].detected_at,
            findings=tuple(
                FindingFacts(
                    id=row.id,
                    output=row.output,
                    code_value=row.code_value,
                    code_scheme=row.code_scheme,
                    code_meaning=row.code_meaning,
                    value=row.value,
                    unit=row.unit,
                    threshold=row.threshold,
                    urgency=UpsPriority(row.urgency),
                    text=row.text,
                )
                for row in rows
            ),
        )


def study_facts(path: Path) -> StudyFacts:
    """The patient and study a KO file names; OSError or ValueError when it cannot be
    read as DICOM."""
    ds = dcmread(path, stop_before_pixels=True)

    def text(keyword: str) -> str:
        return str(ds.get(keyword, "") or "")

    return StudyFacts(
        patient_id=text("PatientID"),
        issuer_of_patient_id=text("IssuerOfPatientID"),
        patient_name=text("PatientName"),
        birth_date=text("PatientBirthDate"),
        sex=text("PatientSex"),
        study_instance_uid=text("StudyInstanceUID"),
        accession_number=text("AccessionNumber"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        study_description=text("StudyDescription"),
        sop_instance_uid=text("SOPInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
    )
