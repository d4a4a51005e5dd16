"""What the audit trail is told of each association the Storage SCP served.

The acceptor hands every association, once it has ended, to the SCP's
``on_association`` callback as an ``AssociationRecord``. :class:`AssociationAudit` is
that callback: it passes the record on (to the SCP's log line), then records one
association row, one "instances received" row per study it stored into, and, for a
failed TLS handshake, a security alert instead. It runs in the association's own
thread after the socket closed; the trail writes a short row and only queues its
syslog message, so nothing here waits on the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from node.acceptor.record import AssociationRecord
from node.audit.events import EventOutcome, SecurityAlertType, StudyRef
from node.audit.trail import AuditTrail

log = logging.getLogger(__name__)

# The acceptor's outcome words (node.acceptor) that say how an association ended.
RELEASED = "released"
NEVER_ASKED = "closed before an association request"  # a TCP probe: no association
TLS_FAILED = "TLS handshake failed"
NOT_ACCEPTED = ("rejected", "no association request")  # refused, or never asked in time


def association_outcome(record: AssociationRecord) -> EventOutcome:
    """The EventOutcomeIndicator of an association: success when released; a serious
    failure when it was never accepted (rejected, no request in time, or no request the
    node could read); a minor one when an accepted association was aborted, timed out
    or lost its connection."""
    if record.outcome == RELEASED:
        return EventOutcome.SUCCESS
    if record.outcome.startswith(NOT_ACCEPTED) or not record.calling_ae_title:
        return EventOutcome.SERIOUS_FAILURE
    return EventOutcome.MINOR_FAILURE


class AssociationAudit:
    """The SCP's ``on_association`` callback: ``then`` first, then the audit trail."""

    def __init__(
        self, trail: AuditTrail, then: Callable[[AssociationRecord], None] | None = None
    ) -> None:
        self.trail = trail
        self.then = then

    def __call__(self, record: AssociationRecord) -> None:
        if self.then is not None:
            try:
                self.then(record)
            except Exception:  # noqa: BLE001 - the log line must not cost the audit row
                log.exception("association callback failed")
        self.record(record)

    def record(self, record: AssociationRecord) -> None:
        if record.outcome.startswith(TLS_FAILED):
            self.trail.security_alert(
                SecurityAlertType.NODE_AUTHENTICATION,
                record.address,
                f"DICOM TLS handshake from {record.address}:{record.port} failed: "
                + record.outcome.removeprefix(TLS_FAILED).lstrip(": "),
                subject_is_node=True,
                by_host=record.address,
            )
            return
        if record.outcome == NEVER_ASKED and not record.calling_ae_title:
            return  # a connection that asked for nothing (a port probe) is no association
        outcome = association_outcome(record)
        tls_identity = record.tls_identity or ""
        self.trail.association_ended(
            record.calling_ae_title,
            record.called_ae_title,
            record.address,
            tls_identity=tls_identity,
            instances=record.stored,
            outcome=outcome,
            reason="" if outcome is EventOutcome.SUCCESS else record.outcome,
        )
        for study in record.studies.values():
            self.trail.instances_received(
                record.calling_ae_title,
                record.address,
                StudyRef(
                    study.study_instance_uid,
                    patient_id=study.patient_id,
                    patient_name=study.patient_name,
                    study_description=study.study_description,
                ),
                study.sop_classes,
                tls_identity=tls_identity,
            )
