"""The node's tables: the DICOM information model it has received, and the work on it.

The database is the source of truth; Celery messages carry only job ids. Files on
disk (the spool, the results) are described by rows here and never found by listing
folders. The tables of who may sign in (``node.db.access``) and of the audit trail
(``node.db.auditing``) live beside these and are imported here, so that importing this
module registers the whole schema on ``Base.metadata`` (what Alembic compares and
``create_all`` makes).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    or_,
    select,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

# Base and utcnow are used here and imported from here by the rest of the node; the
# other tables' modules are imported so that this one module stands for the schema.
from node.db.access import Account as Account
from node.db.access import ApiToken as ApiToken
from node.db.auditing import AuditEvent as AuditEvent
from node.db.declarative import Base, utcnow
from node.db.findings import CriticalFinding as CriticalFinding
from node.db.worklist import UpsEvent as UpsEvent
from node.db.worklist import UpsPriority, Workitem
from node.db.worklist import UpsSubscription as UpsSubscription


def _as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class SeriesState(enum.StrEnum):
    """Where a series stands between its first instance and its jobs.

    Written by :mod:`node.series_state` only; every other module reads it.
    """

    RECEIVING = "receiving"  # instances still arriving (not complete yet: node.completion)
    ROUTED = "routed"  # complete; one job created per accepting model
    NO_MODEL = "no_model"  # complete; no model accepts it (reason says why)


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"  # analysed and every result delivered (or kept, with no archive)
    FAILED = "failed"  # reason in Job.error; retry through the API


class DeliveryState(enum.StrEnum):
    """One result's way to one destination (the outbox)."""

    PENDING = "pending"  # to be sent at next_attempt_at
    COMMITTING = "committing"  # stored; waiting for the archive's storage commitment
    DELIVERED = "delivered"  # stored (and committed, where the destination asks for it)
    DEAD = "dead"  # every attempt failed; POST /api/jobs/{id}/retry sends it again


class ResultKind(enum.StrEnum):
    """What kind of DICOM object a result is; destinations filter on it."""

    SEG = "SEG"  # Segmentation (binary or fractional)
    SR = "SR"  # Comprehensive 3D SR, TID 1500 measurement report
    SC = "SC"  # Secondary Capture overlay, for viewers without SEG support
    KO = "KO"  # Key Object Selection: the images that show a critical finding


class StepState(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


_UID = String(64)


class Patient(Base):
    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("patient_id", "issuer", name="uq_patient_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "study"
    __table_args__ = (Index("ix_study_patient_pk", "patient_pk"),)  # a patient's studies

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    study_date: Mapped[str] = mapped_column(String(8), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Patient attributes that later instances of this study gave differently (the first
    # values stay on the patient): one "Keyword: kept / received" line per disagreement.
    patient_conflicts: Mapped[str] = mapped_column(Text, default="")

    patient: Mapped[Patient] = relationship(back_populates="studies")
    # Numbered series by number, unnumbered ones last; the API lists them so.
    series: Mapped[list[Series]] = relationship(
        back_populates="study",
        order_by=lambda: [Series.series_number.is_(None), Series.series_number, Series.id],
    )


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (
        # completion: receiving series by quiet time; routing: a study's other series
        Index("ix_series_state_last_received_at", "state", "last_received_at"),
        Index("ix_series_study_pk", "study_pk"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id"))
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    series_description: Mapped[str] = mapped_column(String(64), default="")
    sop_class_uid: Mapped[str] = mapped_column(_UID, default="")
    image_type: Mapped[str] = mapped_column(String(128), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[SeriesState] = mapped_column(
        Enum(SeriesState, native_enum=False, length=16), default=SeriesState.RECEIVING
    )
    state_reason: Mapped[str] = mapped_column(Text, default="")
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_by: Mapped[str] = mapped_column(Text, default="")  # why it counted as complete
    # Evidence of completeness (node.completion_evidence): kept by the index with each new
    # instance, in the statement that touches the series anyway; released_at by
    # node.completion_release when an association that stored into it is released.
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    min_instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    images_in_acquisition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    temporal_positions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")  # latest sender
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")
    jobs: Mapped[list[Job]] = relationship(back_populates="series", order_by="Job.id")


class Instance(Base):
    __tablename__ = "instance"
    __table_args__ = (Index("ix_instance_series_pk", "series_pk"),)  # a series' instances

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"))
    sop_class_uid: Mapped[str] = mapped_column(_UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(_UID)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the spool directory
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # instances may pass 2 GiB
    # sha256 of the file as kept, computed while it was written; "" for older rows.
    digest: Mapped[str] = mapped_column(String(64), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Where it lies in its series, for completion's evidence (node.completion_evidence).
    slice_position: Mapped[float | None] = mapped_column(Float, nullable=True)  # mm, normal
    temporal_position: Mapped[int | None] = mapped_column(Integer, nullable=True)

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """One model applied to one series."""

    __tablename__ = "job"
    __table_args__ = (
        # the ledger's stale-job sweep by state; routing's "has this model a job" check
        Index("ix_job_state", "state"),
        Index("ix_job_series_model", "series_pk", "model_name", "model_version"),
        Index("ix_job_workitem_pk", "workitem_pk"),  # a workitem's jobs
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, native_enum=False, length=16), default=JobState.QUEUED
    )
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Renewed by the worker while it runs the job; a stale one means the worker died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    findings: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Taken before lower priorities (the workitem's, a routing rule's, the study's).
    priority: Mapped[UpsPriority] = mapped_column(
        Enum(UpsPriority, native_enum=False, length=8), default=UpsPriority.MEDIUM
    )
    workitem_pk: Mapped[int | None] = mapped_column(ForeignKey("workitem.id"), nullable=True)

    series: Mapped[Series] = relationship(back_populates="jobs")
    workitem: Mapped[Workitem | None] = relationship()
    inputs: Mapped[list[JobInput]] = relationship(back_populates="job", order_by="JobInput.id")
    steps: Mapped[list[JobStep]] = relationship(back_populates="job", order_by="JobStep.id")
    results: Mapped[list[ResultObject]] = relationship(
        back_populates="job", order_by="ResultObject.id"
    )
    actions: Mapped[list[JobAction]] = relationship(order_by="JobAction.id")  # node.jobs.retry


class JobInput(Base):
    """A further series a multimodal job takes, in the manifest's additional_inputs order."""

    __tablename__ = "job_input"
    __table_args__ = (UniqueConstraint("job_pk", "role", name="uq_job_input_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("job.id"))
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"))
    role: Mapped[str] = mapped_column(String(32))

    job: Mapped[Job] = relationship(back_populates="inputs")
    series: Mapped[Series] = relationship()


class JobStep(Base):
    """One pipeline step of one attempt of a job: its state, timing and reason."""

    __tablename__ = "job_step"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("job.id"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    name: Mapped[str] = mapped_column(String(32))
    state: Mapped[StepState] = mapped_column(
        Enum(StepState, native_enum=False, length=16), default=StepState.RUNNING
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")

    job: Mapped[Job] = relationship(back_populates="steps")


class ResultObject(Base):
    """A DICOM object a job produced (SEG, SR, SC), its file and its delivery.

    ``delivered_at`` and ``delivery_error`` are derived from the object's outbox rows
    (``deliveries``), never stored: delivered to every destination that takes it, and
    the latest reason one of them failed. Load ``deliveries`` with the rows
    (``selectinload``) when listing many results.
    """

    __tablename__ = "result_object"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("job.id"))
    kind: Mapped[ResultKind] = mapped_column(Enum(ResultKind, native_enum=False, length=8))
    sop_class_uid: Mapped[str] = mapped_column(_UID)
    sop_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the results directory

    job: Mapped[Job] = relationship(back_populates="results")
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="result", order_by="Delivery.id"
    )

    @property
    def delivered_at(self) -> datetime | None:
        """When the last destination got it, once every row is delivered; else None."""
        rows = self.deliveries
        if not rows or any(
            row.state is not DeliveryState.DELIVERED or row.delivered_at is None for row in rows
        ):
            return None
        return max(_as_utc(row.delivered_at) for row in rows if row.delivered_at is not None)

    @property
    def delivery_error(self) -> str:
        """The latest reason one of its rows failed (rows in outbox order); "" if none."""
        errors = [row.last_error for row in self.deliveries if row.last_error]
        return errors[-1] if errors else ""

    @hybrid_property
    def delivered(self) -> bool:
        """Delivered to every destination that takes it (usable in SQL, e.g. counts)."""
        return self.delivered_at is not None

    @delivered.inplace.expression
    @classmethod
    def _delivered_expression(cls) -> ColumnElement[bool]:
        rows = select(Delivery.id).where(Delivery.result_pk == cls.id)
        open_rows = rows.where(
            or_(Delivery.state != DeliveryState.DELIVERED, Delivery.delivered_at.is_(None))
        )
        return and_(rows.exists(), ~open_rows.exists())


class Delivery(Base):
    """The outbox: one result object on its way to one destination."""

    __tablename__ = "delivery"
    __table_args__ = (UniqueConstraint("result_pk", "destination", name="uq_delivery_target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    result_pk: Mapped[int] = mapped_column(ForeignKey("result_object.id"))
    destination: Mapped[str] = mapped_column(String(64))  # a configured destination's name
    state: Mapped[DeliveryState] = mapped_column(
        Enum(DeliveryState, native_enum=False, length=16), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Pending: not before this. Committing: the commitment report is late after this.
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    transaction_uid: Mapped[str | None] = mapped_column(_UID, nullable=True, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    stored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    result: Mapped[ResultObject] = relationship(back_populates="deliveries")
    history: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", order_by="DeliveryAttempt.id"
    )


class DeliveryAttempt(Base):
    """One try of one delivery: when, and how it ended."""

    __tablename__ = "delivery_attempt"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_pk: Mapped[int] = mapped_column(ForeignKey("delivery.id"))
    number: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))  # stored, committed, failed
    detail: Mapped[str] = mapped_column(Text, default="")

    delivery: Mapped[Delivery] = relationship(back_populates="history")


class JobAction(Base):
    """Who retried or re-analysed a job, when, why, and what it did (node.jobs.retry)."""

    __tablename__ = "job_action"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("job.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # "retry" or "reanalyse"
    actor: Mapped[str] = mapped_column(String(128))  # the principal's name
    actor_role: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")  # required for a re-analysis
    outcome: Mapped[str] = mapped_column(Text, default="")  # what the node did about it
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
