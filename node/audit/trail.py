"""``AuditTrail``: the one writer of audit trail rows, and the hand-off to syslog.

Each process builds one trail at start-up (``AuditTrail.from_settings``) and calls
``record`` (or one of the named entry points) when something auditable happened. The
row is written in the trail's own short transaction, on its own session: call it after
your transaction has committed, never inside it (on SQLite a second writer would wait
for yours). The DICOM audit message then goes to the emitters, whose queues the caller
never waits on. Nothing here raises into the caller: a database or syslog failure is
logged and counted (``counts``), and receiving goes on.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from node.audit.dicom_message import AuditSource, audit_message
from node.audit.events import (
    ApplicationStarted,
    ApplicationStopped,
    AssociationEnded,
    AuditedEvent,
    CommitmentReceived,
    EventOutcome,
    InstancesReceived,
    OperatorAction,
    ResultsSent,
    SecurityAlert,
    SecurityAlertType,
    SignIn,
    SignOut,
    StudyRef,
)
from node.audit.syslog import SyslogAddress, SyslogEmitter, SyslogSender, client_context
from node.db.auditing import AuditEvent
from node.db.session import SessionFactory, transaction
from node.settings import Settings

log = logging.getLogger(__name__)


class AuditEmitter(Protocol):
    """Where audit messages go besides the database (syslog, for now)."""

    def emit(self, message: bytes, occurred_at: datetime, failure: bool = False) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


@dataclass
class TrailCounts:
    recorded: int = 0
    record_failures: int = 0  # rows that could not be written (logged)
    message_failures: int = 0  # audit messages that could not be built or queued (logged)


class AuditTrail:
    """Records audit events: a row each, and a DICOM audit message to each emitter."""

    def __init__(
        self,
        sessions: SessionFactory,
        source: AuditSource,
        emitters: Sequence[AuditEmitter] = (),
        *,
        emit_accepted_associations: bool = False,
    ) -> None:
        self.sessions = sessions
        self.source = source
        self.emitters = list(emitters)
        # PS3.15 A.5.3.11 expects only failed node authentications to be reported: an
        # accepted association's row is kept, its message is sent only when asked for.
        self.emit_accepted_associations = emit_accepted_associations
        self.counts = TrailCounts()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, sessions: SessionFactory) -> AuditTrail:
        """The trail the settings describe, with a syslog emitter when one is configured."""
        host = socket.gethostname()
        source = AuditSource(settings.audit_source_id or settings.ae_title, settings.ae_title, host)
        emitters: list[AuditEmitter] = []
        if settings.audit_syslog:
            address = SyslogAddress.parse(settings.audit_syslog)
            context = None
            if address.transport == "tls":
                context = client_context(
                    settings.audit_syslog_ca, settings.audit_syslog_cert, settings.audit_syslog_key
                )
            emitters.append(SyslogEmitter(SyslogSender(address, context), hostname=host))
        return cls(
            sessions,
            source,
            emitters,
            emit_accepted_associations=settings.audit_syslog_accepted_associations,
        )

    def record(self, event: AuditedEvent, occurred_at: datetime | None = None) -> None:
        """Write ``event``'s row and queue its audit message; never raises."""
        moment = occurred_at or datetime.now(UTC)
        try:
            with transaction(self.sessions) as session:
                session.add(
                    AuditEvent(
                        occurred_at=moment,
                        kind=event.kind,
                        outcome=int(event.outcome),
                        actor=event.actor[:128],
                        actor_role=event.actor_role[:32],
                        peer_address=event.peer_address[:255],
                        detail=event.detail(),
                    )
                )
        except Exception:  # noqa: BLE001 - auditing must not stop what it audits
            log.exception("audit trail: could not record %s", event.kind.value)
            with self._lock:
                self.counts.record_failures += 1
        else:
            with self._lock:
                self.counts.recorded += 1
        if self.emitters and self._emits(event):
            self._emit(event, moment)

    def _emits(self, event: AuditedEvent) -> bool:
        if isinstance(event, AssociationEnded) and event.outcome is EventOutcome.SUCCESS:
            return self.emit_accepted_associations
        return True

    def _emit(self, event: AuditedEvent, moment: datetime) -> None:
        try:
            message = audit_message(event, self.source, moment)
            for emitter in self.emitters:
                emitter.emit(message, moment, failure=event.outcome is not EventOutcome.SUCCESS)
        except Exception:  # noqa: BLE001
            log.exception("audit trail: could not send the %s message", event.kind.value)
            with self._lock:
                self.counts.message_failures += 1

    def close(self, timeout: float = 5.0) -> None:
        """Send what the emitters hold (within ``timeout`` each), then stop them."""
        for emitter in self.emitters:
            emitter.close(timeout)

    # ---- the entry points the node's flows call ----------------------------------

    def association_ended(
        self,
        calling_ae_title: str,
        called_ae_title: str,
        peer_host: str,
        *,
        tls_identity: str = "",
        instances: int = 0,
        outcome: EventOutcome = EventOutcome.SUCCESS,
        reason: str = "",
    ) -> None:
        """An association was released, aborted, or refused (then with a failure outcome
        and the reason, e.g. "calling AE title not allowed")."""
        self.record(
            AssociationEnded(
                calling_ae_title=calling_ae_title,
                called_ae_title=called_ae_title,
                peer_host=peer_host,
                tls_identity=tls_identity,
                instances=instances,
                outcome=outcome,
                reason=reason,
            )
        )

    def instances_received(
        self,
        calling_ae_title: str,
        peer_host: str,
        study: StudyRef,
        sop_classes: Mapping[str, int],
        *,
        tls_identity: str = "",
        updated: bool = False,
    ) -> None:
        """One study's instances kept from one association (call once per study)."""
        self.record(
            InstancesReceived(
                calling_ae_title=calling_ae_title,
                called_ae_title=self.source.ae_title,
                peer_host=peer_host,
                tls_identity=tls_identity,
                study=study,
                sop_classes=dict(sop_classes),
                updated=updated,
            )
        )

    def results_sent(
        self,
        destination: str,
        destination_address: str,
        study: StudyRef,
        instances: Mapping[str, Sequence[str]],
        *,
        destination_ae_title: str = "",
        destination_host: str = "",
        job_id: int | None = None,
        outcome: EventOutcome = EventOutcome.SUCCESS,
        reason: str = "",
    ) -> None:
        """Results (SOP Class UID -> SOP Instance UIDs) of one study stored to a
        destination; a failed try with MINOR_FAILURE (retried) or SERIOUS_FAILURE (dead)."""
        self.record(
            ResultsSent(
                destination=destination,
                destination_address=destination_address,
                destination_ae_title=destination_ae_title,
                destination_host=destination_host,
                source_ae_title=self.source.ae_title,
                study=study,
                instances={k: tuple(v) for k, v in instances.items()},
                job_id=job_id,
                outcome=outcome,
                reason=reason,
            )
        )

    def commitment_received(
        self,
        destination: str,
        archive_ae_title: str,
        transaction_uid: str,
        study: StudyRef,
        committed: Mapping[str, Sequence[str]],
        failed: Mapping[str, Sequence[str]],
        *,
        archive_host: str = "",
    ) -> None:
        """A storage commitment report; any failed instance makes it a minor failure."""
        failures = sum(len(uids) for uids in failed.values())
        total = failures + sum(len(uids) for uids in committed.values())
        self.record(
            CommitmentReceived(
                destination=destination,
                archive_ae_title=archive_ae_title,
                archive_host=archive_host,
                node_ae_title=self.source.ae_title,
                transaction_uid=transaction_uid,
                study=study,
                committed={k: tuple(v) for k, v in committed.items()},
                failed={k: tuple(v) for k, v in failed.items()},
                outcome=EventOutcome.MINOR_FAILURE if failures else EventOutcome.SUCCESS,
                reason=f"{failures} of {total} instances not committed" if failures else "",
            )
        )

    def sign_in(
        self,
        user: str,
        client_host: str,
        *,
        succeeded: bool,
        reason: str = "",
        role: str = "",
        method: str = "password",
        outcome: EventOutcome | None = None,
    ) -> None:
        """A sign-in attempt. A failure is a minor failure unless ``outcome`` says more
        (SERIOUS_FAILURE: too many tries; MAJOR_FAILURE: the account is now locked)."""
        if outcome is None:
            outcome = EventOutcome.SUCCESS if succeeded else EventOutcome.MINOR_FAILURE
        self.record(
            SignIn(
                user=user,
                role=role,
                client_host=client_host,
                method=method,
                outcome=outcome,
                reason=reason,
            )
        )

    def sign_out(
        self, user: str, client_host: str, *, by_user: bool = True, role: str = ""
    ) -> None:
        """A sign-out; ``by_user=False`` when the session expired or the node ended it."""
        self.record(SignOut(user=user, role=role, client_host=client_host, by_user=by_user))

    def operator_action(
        self,
        user: str,
        action: str,
        target: str,
        reason: str,
        *,
        role: str = "",
        client_host: str = "",
        outcome: EventOutcome = EventOutcome.SUCCESS,
        alert_type: SecurityAlertType = SecurityAlertType.USE_OF_RESTRICTED_FUNCTION,
    ) -> None:
        """An operator's action: who (``user``, ``role``), what (``action`` on ``target``,
        a URI path such as "/api/jobs/12/retry"), why (``reason``), from where."""
        self.record(
            OperatorAction(
                user=user,
                role=role,
                client_host=client_host,
                action=action,
                target=target,
                reason=reason,
                outcome=outcome,
                alert_type=alert_type,
            )
        )

    def application_started(self, process: str, launched_by: str = "") -> None:
        self.record(
            ApplicationStarted(
                process=process, ae_titles=(self.source.ae_title,), launched_by=launched_by
            )
        )

    def application_stopped(self, process: str, launched_by: str = "") -> None:
        self.record(
            ApplicationStopped(
                process=process, ae_titles=(self.source.ae_title,), launched_by=launched_by
            )
        )

    def security_alert(
        self,
        alert_type: SecurityAlertType,
        subject: str,
        description: str,
        *,
        subject_is_node: bool = False,
        by: str = "",
        by_host: str = "",
        outcome: EventOutcome = EventOutcome.MINOR_FAILURE,
    ) -> None:
        """Anything else security-relevant, e.g. a failed TLS handshake from a host
        (``subject`` that host, ``subject_is_node=True``)."""
        self.record(
            SecurityAlert(
                alert_type=alert_type,
                subject=subject,
                subject_is_node=subject_is_node,
                description=description,
                by=by,
                by_host=by_host,
                outcome=outcome,
            )
        )
