"""Critical findings: a model output that passed the critical threshold its manifest sets.

Created by ``node.jobs.ledger`` with the job's results (the analysis worker reports
which outputs fired); acknowledged by an operator through ``node.findings`` (who, when,
a note). The notifications themselves (HL7 v2, FHIR, webhook) go through the delivery
outbox as deliveries of the job's Key Object Selection document.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from node.db.declarative import Base, utcnow


class CriticalFinding(Base):
    """One output of one job over its critical threshold."""

    __tablename__ = "critical_finding"
    __table_args__ = (Index("ix_critical_finding_job_pk", "job_pk"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("job.id"))
    output: Mapped[str] = mapped_column(String(64))  # the manifest's class or segment name
    code_value: Mapped[str] = mapped_column(String(64))
    code_scheme: Mapped[str] = mapped_column(String(16))
    code_meaning: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)  # a probability, or a volume in ml
    unit: Mapped[str] = mapped_column(String(16), default="")  # "" (probability) or "ml"
    threshold: Mapped[float] = mapped_column(Float)
    urgency: Mapped[str] = mapped_column(String(8))  # a UpsPriority value (STAT, HIGH...)
    text: Mapped[str] = mapped_column(Text)  # the finding in words
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    acknowledged_by: Mapped[str] = mapped_column(String(128), default="")
    acknowledged_role: Mapped[str] = mapped_column(String(16), default="")
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledgement_note: Mapped[str] = mapped_column(Text, default="")
