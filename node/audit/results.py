"""What the audit trail is told of results on their way out: each try to send them to a
destination, and each storage commitment report an archive sends back.

The delivery pass (``node.delivery.deliver``) and the commitment reports
(``node.delivery.reports``) call :class:`ResultsAudit` once the outbox has committed
what happened; it reads back the rows concerned (their study and patient, and whether
a failed row will be tried again or is dead-lettered) and records one event per
destination, job and study. A failed try is a minor failure while the row will be
tried again, a serious one once it is dead-lettered. Nothing here raises into the
delivery: a failure to read or record is logged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, select

from node.audit.events import EventOutcome, StudyRef
from node.audit.trail import AuditTrail
from node.db.models import (
    Delivery,
    DeliveryState,
    Job,
    Patient,
    ResultObject,
    Series,
    Study,
)
from node.db.session import SessionFactory
from node.delivery.commitment import CommitmentReport
from node.delivery.destinations import DicomDestination
from node.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxRow:
    """One result's delivery to one destination, as the audit trail needs it."""

    destination: str
    state: DeliveryState
    job_id: int
    sop_class_uid: str
    sop_instance_uid: str
    study: StudyRef


def _read(sessions: SessionFactory, where: ColumnElement[bool]) -> list[OutboxRow]:
    query = (
        select(
            Delivery.destination,
            Delivery.state,
            Job.id,
            ResultObject.sop_class_uid,
            ResultObject.sop_instance_uid,
            Study.study_instance_uid,
            Patient.patient_id,
            Patient.patient_name,
            Study.accession_number,
            Study.study_description,
        )
        .join(ResultObject, Delivery.result_pk == ResultObject.id)
        .join(Job, ResultObject.job_pk == Job.id)
        .join(Series, Job.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(where)
        .order_by(Delivery.id)
    )
    with sessions() as session:
        return [
            OutboxRow(destination, state, job_id, sop_class, uid, StudyRef(*study))
            for destination, state, job_id, sop_class, uid, *study in session.execute(query)
        ]


def _by_class(rows: Iterable[OutboxRow]) -> dict[str, list[str]]:
    """SOP Class UID -> SOP Instance UIDs, as the audit message lists them."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        grouped[row.sop_class_uid].append(row.sop_instance_uid)
    return dict(grouped)


def _try_outcome(row: OutboxRow, failed: bool) -> EventOutcome:
    if not failed:
        return EventOutcome.SUCCESS
    if row.state is DeliveryState.DEAD:
        return EventOutcome.SERIOUS_FAILURE  # no further try until an operator retries
    return EventOutcome.MINOR_FAILURE  # tried again after the backoff


class ResultsAudit:
    """Records results sent and committed in the process's audit trail."""

    def __init__(self, trail: AuditTrail, sessions: SessionFactory, settings: Settings) -> None:
        self.trail = trail
        self.sessions = sessions
        self.settings = settings

    def _where(self, name: str) -> tuple[str, str, str]:
        """A destination's address, AE title and host ("" where it has none)."""
        destination = self.settings.destination(name)
        if destination is None:
            return "", "", ""
        if isinstance(destination, DicomDestination):
            ae = destination.ae
            return str(ae), ae.ae_title, ae.host
        return destination.address, "", urlsplit(destination.address).hostname or ""

    def sent(self, destination: str, ids: list[int], failure: str = "") -> None:
        """One try to send the outbox rows ``ids`` to ``destination`` is recorded in the
        outbox: stored (``failure`` empty) or failed with ``failure`` as the reason."""
        try:
            rows = _read(self.sessions, Delivery.id.in_(ids))
            address, ae_title, host = self._where(destination)
            groups: dict[tuple[int, StudyRef, EventOutcome], list[OutboxRow]] = defaultdict(list)
            for row in rows:
                groups[(row.job_id, row.study, _try_outcome(row, bool(failure)))].append(row)
            for (job_id, study, outcome), members in groups.items():
                self.trail.results_sent(
                    destination,
                    address,
                    study,
                    _by_class(members),
                    destination_ae_title=ae_title,
                    destination_host=host,
                    job_id=job_id,
                    outcome=outcome,
                    reason=failure,
                )
        except Exception:  # noqa: BLE001 - auditing must not stop the delivery
            log.exception("audit trail: could not record results sent to %s", destination)

    def awaiting_commitment(self, transaction_uid: str) -> list[OutboxRow]:
        """The rows waiting for ``transaction_uid``'s report; read them before the report
        is applied (a failed row loses its Transaction UID)."""
        try:
            return _read(
                self.sessions,
                (Delivery.transaction_uid == transaction_uid)
                & (Delivery.state == DeliveryState.COMMITTING),
            )
        except Exception:  # noqa: BLE001
            log.exception("audit trail: could not read the rows of %s", transaction_uid)
            return []

    def commitment_received(self, report: CommitmentReport, awaiting: list[OutboxRow]) -> None:
        """``report`` was applied to the outbox; ``awaiting``: its rows, read before."""
        try:
            failed_uids = {uid for uid, _code in report.failed}
            committed_uids = set(report.committed)
            groups: dict[tuple[str, StudyRef], list[OutboxRow]] = defaultdict(list)
            for row in awaiting:
                groups[(row.destination, row.study)].append(row)
            for (destination, study), members in groups.items():
                committed = [row for row in members if row.sop_instance_uid in committed_uids]
                failed = [row for row in members if row.sop_instance_uid in failed_uids]
                if not committed and not failed:
                    continue  # the report says nothing of these yet
                _address, ae_title, host = self._where(destination)
                self.trail.commitment_received(
                    destination,
                    ae_title,
                    report.transaction_uid,
                    study,
                    _by_class(committed),
                    _by_class(failed),
                    archive_host=host,
                )
        except Exception:  # noqa: BLE001
            log.exception("audit trail: could not record report %s", report.transaction_uid)
