"""The JSON shapes the API answers with.

Times are ISO 8601 in UTC. SQLite hands back naive datetimes for timezone-aware
columns; they were written as UTC, so they are marked as UTC here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel

from node.db.models import Delivery, DeliveryState, JobState, SeriesState, StepState


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class DestinationOut(BaseModel):
    """Where results go (the configured destinations)."""

    name: str
    address: str  # AET@host:port (DICOM) or the DICOMweb root (STOW-RS)
    transport: str  # "dicom" or "stow"
    kinds: list[str]
    models: list[str]  # empty: every model
    storage_commitment: bool


class NodeOut(BaseModel):
    """Who this node is on the DICOM network, and where its results go."""

    ae_title: str
    dicom_port: int
    archive: str | None
    destinations: list[DestinationOut]


class PatientOut(BaseModel):
    patient_id: str
    issuer: str
    name: str


class SeriesJobOut(BaseModel):
    """A job as listed under its series."""

    id: int
    model_name: str
    model_version: str
    state: JobState


class SeriesOut(BaseModel):
    id: int
    series_instance_uid: str
    series_number: int | None
    modality: str
    body_part_examined: str
    description: str
    instances: int
    state: SeriesState
    state_reason: str
    last_received_at: UtcDatetime
    completed_at: UtcDatetime | None
    jobs: list[SeriesJobOut]


class StudyOut(BaseModel):
    id: int
    study_instance_uid: str
    study_date: str
    accession_number: str
    description: str
    first_received_at: UtcDatetime
    patient: PatientOut
    series: list[SeriesOut]


class StepOut(BaseModel):
    """One pipeline step of the job's latest attempt."""

    attempt: int
    name: str
    state: StepState
    started_at: UtcDatetime
    seconds: float | None
    detail: str


class DeliveryOut(BaseModel):
    """One result's way to one destination (a row of the outbox)."""

    destination: str
    state: DeliveryState
    attempts: int
    next_attempt_at: UtcDatetime | None  # pending: when it is tried next
    last_error: str
    stored_at: UtcDatetime | None
    delivered_at: UtcDatetime | None  # stored, and committed where the destination asks


def delivery_fields(row: Delivery) -> dict[str, Any]:
    """A ``DeliveryOut``'s fields from an outbox row (the next attempt only when pending)."""
    return {
        "destination": row.destination,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at if row.state is DeliveryState.PENDING else None,
        "last_error": row.last_error,
        "stored_at": row.stored_at,
        "delivered_at": row.delivered_at,
    }


class OutboxRowOut(DeliveryOut):
    """An outbox row with the result and job it belongs to (``/api/deliveries``)."""

    job_id: int
    kind: str
    sop_instance_uid: str


class ResultOut(BaseModel):
    kind: str
    sop_instance_uid: str
    delivered_at: UtcDatetime | None  # delivered to every destination that takes it
    delivery_error: str
    deliveries: list[DeliveryOut]


class JobOut(BaseModel):
    id: int
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    series_description: str
    model_name: str
    model_version: str
    state: JobState
    error: str
    attempts: int
    created_at: UtcDatetime
    enqueued_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    findings: Any
    steps: list[StepOut]
    results: list[ResultOut]


class RetryOut(BaseModel):
    """The job's state as read back right after the retry was accepted."""

    id: int
    state: JobState


class ErrorOut(BaseModel):
    detail: str
