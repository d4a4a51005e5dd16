"""The JSON shapes the API answers with, validated from the node's rows.

Each model reads its fields from an ORM row (``model_config = from_attributes``), so a
route answers ``JobOut.model_validate(job)``; where a field's name differs from the
row's, ``validation_alias`` says where it comes from. Times are ISO 8601 in UTC.
SQLite hands back naive datetimes for timezone-aware columns; they were written as
UTC, so they are marked as UTC here.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from node.db.models import DeliveryState, JobState, ResultKind, SeriesState, StepState
from node.db.worklist import UpsPriority


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

INSTANCE_COUNTS = "instance_counts"
"""The validation context key of ``{series id: instances}`` (counted in one query)."""

MASKED = "***"
"""What a masked patient name, patient ID or accession number reads (the API never shows
a birth date)."""


class RowOut(BaseModel):
    """A shape read from the attributes of a row (or of the settings)."""

    model_config = ConfigDict(from_attributes=True)


class DestinationOut(RowOut):
    """Where results go (a configured destination; its HTTP headers are never shown)."""

    name: str
    address: str  # AET@host:port (DICOM) or the DICOMweb root (STOW-RS)
    transport: str = Field(validation_alias="type")  # "dicom" or "stow"
    kinds: list[str]
    models: list[str]  # empty: every model
    storage_commitment: bool = False  # a DICOM destination's; the others have none


class NodeOut(RowOut):
    """Who this node is on the DICOM network, and where its results go (from the settings)."""

    ae_title: str
    dicom_port: int
    archive: str | None
    destinations: list[DestinationOut] = Field(validation_alias="all_destinations")


class PatientOut(RowOut):
    patient_id: str
    issuer: str
    name: str = Field(validation_alias="patient_name")

    def masked(self) -> PatientOut:
        """Name and ID replaced by ``MASKED`` (an empty one stays empty)."""
        return self.model_copy(update={"name": hidden(self.name),
                                       "patient_id": hidden(self.patient_id)})  # fmt: skip


def hidden(value: str) -> str:
    """``MASKED`` for a patient identifier a role may not see; empty stays empty."""
    return MASKED if value else ""


class SeriesJobOut(RowOut):
    """A job as listed under its series."""

    id: int
    model_name: str
    model_version: str
    state: JobState
    priority: UpsPriority  # decided by routing (node.priority): the order work is taken in


class SeriesOut(RowOut):
    """A series; ``instances`` comes from the validation context (``INSTANCE_COUNTS``)."""

    id: int
    series_instance_uid: str
    series_number: int | None
    modality: str
    body_part_examined: str
    description: str = Field(validation_alias="series_description")
    # Not read from the row, whose ``instances`` would load every instance: counted for
    # all the listed series in one query and passed in the context (INSTANCE_COUNTS).
    instances: int = Field(default=0, validation_alias="instance_count")
    state: SeriesState
    state_reason: str
    last_received_at: UtcDatetime
    completed_at: UtcDatetime | None
    completed_by: str  # why it counted as complete: the evidence, a rule or the quiet period
    jobs: list[SeriesJobOut]  # by id (the relationship's order)

    @model_validator(mode="after")
    def _count_instances(self, info: ValidationInfo) -> SeriesOut:
        counts = (info.context or {}).get(INSTANCE_COUNTS)
        if counts is not None:
            self.instances = counts.get(self.id, 0)
        return self


class StudyOut(RowOut):
    id: int
    study_instance_uid: str
    study_date: str
    accession_number: str
    description: str = Field(validation_alias="study_description")
    first_received_at: UtcDatetime
    # Patient attributes this study's instances disagree on, one per line ("" when none).
    patient_conflicts: str
    patient: PatientOut
    series: list[SeriesOut]  # by series number, unnumbered last (the relationship's order)
    # True when the asker's role may not see patient identifiers (AINODE_PHI_ROLES):
    # name, ID, accession number and the conflicts then read MASKED (``masked``).
    identifiers_hidden: bool = False
    priority: UpsPriority | None = None  # the most urgent of its jobs'; None: no job

    @model_validator(mode="after")
    def _most_urgent_job(self) -> StudyOut:
        ranked = [job.priority for series in self.series for job in series.jobs]
        self.priority = min(ranked, key=lambda p: p.rank, default=None)
        return self

    def masked(self) -> StudyOut:
        """This study with patient name, patient ID, accession number and the conflicts
        (which quote them) replaced by ``MASKED``, for roles that may not see them."""
        return self.model_copy(
            update={
                "patient": self.patient.masked(),
                "accession_number": hidden(self.accession_number),
                "patient_conflicts": hidden(self.patient_conflicts),
                "identifiers_hidden": True,
            }
        )


class StepOut(RowOut):
    """One pipeline step of the job's latest attempt."""

    attempt: int
    name: str
    state: StepState
    started_at: UtcDatetime
    seconds: float | None
    detail: str


class DeliveryOut(RowOut):
    """One result's way to one destination (a row of the outbox)."""

    destination: str
    state: DeliveryState
    attempts: int
    next_attempt_at: UtcDatetime | None  # pending: when it is tried next
    last_error: str
    stored_at: UtcDatetime | None
    delivered_at: UtcDatetime | None  # stored, and committed where the destination asks

    @model_validator(mode="after")
    def _next_attempt_when_pending(self) -> DeliveryOut:
        # Otherwise the column holds a claim or commitment deadline, not an attempt.
        if self.state is not DeliveryState.PENDING:
            self.next_attempt_at = None
        return self


class OutboxRowOut(DeliveryOut):
    """An outbox row with the result and job it belongs to (``/api/deliveries``)."""

    job_id: int = Field(validation_alias=AliasPath("result", "job_pk"))
    kind: ResultKind = Field(validation_alias=AliasPath("result", "kind"))
    sop_instance_uid: str = Field(validation_alias=AliasPath("result", "sop_instance_uid"))


class ResultOut(RowOut):
    kind: ResultKind
    sop_instance_uid: str
    delivered_at: UtcDatetime | None  # delivered to every destination that takes it
    delivery_error: str  # the latest reason one of its deliveries failed
    deliveries: list[DeliveryOut]


class JobActionOut(RowOut):
    """An operator's retry or an admin's re-analysis of the job: who, when, why, what."""

    action: str
    actor: str
    actor_role: str
    reason: str
    outcome: str
    at: UtcDatetime


class JobOut(RowOut):
    id: int
    study_instance_uid: str = Field(
        validation_alias=AliasPath("series", "study", "study_instance_uid")
    )
    series_instance_uid: str = Field(validation_alias=AliasPath("series", "series_instance_uid"))
    modality: str = Field(validation_alias=AliasPath("series", "modality"))
    series_description: str = Field(validation_alias=AliasPath("series", "series_description"))
    model_name: str
    model_version: str
    state: JobState
    priority: UpsPriority  # decided by routing (node.priority): the order work is taken in
    error: str
    attempts: int
    created_at: UtcDatetime
    enqueued_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    findings: Any
    steps: list[StepOut]  # the latest attempt's only
    results: list[ResultOut]  # by id (the relationship's order)
    actions: list[JobActionOut]  # retries and re-analyses, oldest first

    @field_validator("steps", mode="before")
    @classmethod
    def _latest_attempt(cls, steps: Sequence[Any]) -> list[Any]:
        def attempt(step: Any) -> int:
            return step["attempt"] if isinstance(step, dict) else step.attempt

        latest = max((attempt(step) for step in steps), default=None)
        return [step for step in steps if attempt(step) == latest]


class RetryIn(BaseModel):
    """An optional note with a retry (why), kept with the job's actions."""

    reason: str = Field(default="", max_length=2000)


class ReanalyseIn(BaseModel):
    """Why a finished job is analysed again: required, kept with the job's actions."""

    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("say why the job is analysed again")
        return value.strip()


class RetryOut(RowOut):
    """The job's state as read back right after the retry (or re-analysis) was accepted."""

    id: int
    state: JobState


class ErrorOut(BaseModel):
    detail: str


# ---- a study's timeline (node.web.routes.timeline) ----------------------------------


class TimelineKind(enum.StrEnum):
    """What happened, in the order of the flow (ties in time read in this order)."""

    RECEIVED_FIRST = "received_first"  # the series' first instance received
    RECEIVED_LAST = "received_last"  # its last instance received
    COMPLETE = "complete"  # the series counted as complete
    QUEUED = "queued"  # a job made for it
    STEP = "step"  # a pipeline step of an attempt began (``seconds``: how long it took)
    STORED = "stored"  # a try to send a result: the destination stored it
    FAILED = "failed"  # a try to send a result failed (``detail``: why)
    COMMITTED = "committed"  # the archive's storage commitment for a result
    DELIVERED = "delivered"  # a result delivered to a destination
    ACTION = "action"  # an operator's retry or an admin's re-analysis
    FINISHED = "finished"  # the job ended (``state``: succeeded or failed)


class TimelineEventOut(BaseModel):
    """One event; ``offset_seconds`` from the study's first instance received."""

    kind: TimelineKind
    at: UtcDatetime
    offset_seconds: float
    name: str = ""  # the step's name, the destination's, or the action's
    state: str = ""  # the step's state, the try's outcome, the series' or job's state
    seconds: float | None = None  # a step's duration (None while it runs)
    attempt: int | None = None  # the job's attempt (steps) or the delivery's try
    result_kind: ResultKind | None = None  # the result a delivery event is about
    detail: str = ""


class JobTimelineOut(BaseModel):
    id: int
    model_name: str
    model_version: str
    state: JobState
    # Per destination whose results are all stored: seconds from the last instance
    # received to the last of them stored (ainode_result_latency_seconds observes these).
    latency_seconds: dict[str, float]
    events: list[TimelineEventOut]


class SeriesTimelineOut(BaseModel):
    series_instance_uid: str
    series_number: int | None
    modality: str
    description: str
    state: SeriesState
    instances: int
    events: list[TimelineEventOut]  # received, complete
    jobs: list[JobTimelineOut]  # by id


class StudyTimelineOut(BaseModel):
    study_instance_uid: str
    study_date: str
    accession_number: str
    description: str
    patient: PatientOut
    started_at: UtcDatetime  # the study's first instance received: offsets count from it
    series: list[SeriesTimelineOut]  # as /api/studies lists them
    identifiers_hidden: bool = False  # as StudyOut's

    def masked(self) -> StudyTimelineOut:
        """Patient name, patient ID and accession number read ``MASKED``."""
        return self.model_copy(
            update={
                "patient": self.patient.masked(),
                "accession_number": hidden(self.accession_number),
                "identifiers_hidden": True,
            }
        )
