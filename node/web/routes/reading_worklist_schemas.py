"""The JSON shapes of the reading room's worklist and of a critical finding's acknowledgement.

Beside ``node.web.routes.schemas`` (whose patient shape and masking they reuse, so a
worklist row hides exactly what a study hides): one row per study, its urgency, each
job's findings in words (``models.finding_words``), its critical findings with their
acknowledgement, and where its overlay thumbnail is.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field

from node.acknowledgement import MAX_NOTE_LENGTH
from node.db.models import JobState
from node.db.worklist import UpsPriority
from node.web.routes.schemas import PatientOut, RowOut, UtcDatetime, hidden


class CriticalFindingOut(RowOut):
    """An output of a job over its manifest's critical threshold, and who acknowledged it."""

    id: int
    job_id: int = Field(validation_alias="job_pk")
    output: str  # the manifest's class or segment name
    finding: str = Field(validation_alias="code_meaning")
    value: float  # a probability, or a volume in mL
    unit: str  # "" (probability) or "ml"
    threshold: float
    urgency: str  # a UpsPriority value
    text: str  # the finding in words
    detected_at: UtcDatetime
    acknowledged_by: str  # "" until acknowledged
    acknowledged_role: str
    acknowledged_at: UtcDatetime | None
    acknowledgement_note: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None


class WorklistJobOut(BaseModel):
    """A job of the study: its model, state, priority and findings in words."""

    id: int
    model_name: str
    model_version: str
    state: JobState
    priority: UpsPriority
    findings: list[str]  # one line per output, e.g. "Lung nodule: 2.4 mL"
    thumbnail: str | None  # the URL of its overlay's thumbnail; None without an overlay
    critical_findings: list[CriticalFindingOut]  # oldest first


class WorklistRowOut(BaseModel):
    """One study of the worklist."""

    study_instance_uid: str
    patient: PatientOut
    accession_number: str
    study_date: str
    description: str
    modalities: list[str]  # of its series, in series order, each once
    received_at: UtcDatetime  # its first instance received
    age_seconds: float  # since then, at the time of the answer
    # The highest of its jobs' priorities and its critical findings' urgencies.
    urgency: UpsPriority
    unacknowledged_critical: int  # critical findings nobody acknowledged yet
    thumbnail: str | None  # the most relevant job's overlay thumbnail (critical first)
    jobs: list[WorklistJobOut]  # by id
    identifiers_hidden: bool = False  # as StudyOut's

    def masked(self) -> WorklistRowOut:
        """Patient name, patient ID and accession number read ``MASKED``."""
        return self.model_copy(
            update={
                "patient": self.patient.masked(),
                "accession_number": hidden(self.accession_number),
                "identifiers_hidden": True,
            }
        )


class WorklistPageOut(BaseModel):
    """A page of the worklist: unacknowledged critical first, then by urgency, then oldest."""

    total: int  # studies matching the filters, on every page
    offset: int
    limit: int
    rows: list[WorklistRowOut]


class AcknowledgeIn(BaseModel):
    """An optional note with an acknowledgement (what was done about it)."""

    note: str = Field(default="", max_length=MAX_NOTE_LENGTH)
