"""A notification of critical findings: what every notification kind's send tells.

``hl7``, ``fhir`` and ``webhook`` destinations take a job's Key Object Selection only;
:func:`notifications` turns each such ``Outgoing`` item into a :class:`Notification`:
the patient and study read from the KO file, the job's critical findings and model
carried on the item by the delivery pass. A result without findings, or a KO file
that cannot be read, is a ``DeliveryError`` (a failed attempt, retried by the outbox).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydicom.errors import InvalidDicomError

from node.delivery.critical_facts import CriticalFacts, StudyFacts, study_facts
from node.delivery.transports import DeliveryError, Outgoing


@dataclass(frozen=True)
class Notification:
    """One job's critical findings on their way to one destination."""

    study: StudyFacts
    critical: CriticalFacts

    @property
    def key_objects_uid(self) -> str:
        """The SOP Instance UID of the KOS flagging the findings' images."""
        return self.study.sop_instance_uid

    @property
    def identity(self) -> str:
        """64 hex digits naming this notification: the same on every retry, so a
        receiver can drop a repeat; another when the findings change (a re-analysis)."""
        facts = [(f.output, f.value, f.urgency.value) for f in self.critical.findings]
        return hashlib.sha256(repr((self.key_objects_uid, facts)).encode()).hexdigest()


def notifications(files: list[Outgoing]) -> list[Notification]:
    """A notification per KO item of ``files``; DeliveryError when one cannot be made."""
    made = []
    for item in files:
        if item.finding is None:
            raise DeliveryError(
                f"result {item.sop_instance_uid} carries no critical finding: a notification "
                "destination takes a job's Key Object Selection only (kinds: [KO])"
            )
        try:
            study = study_facts(item.path)
        except (OSError, ValueError, InvalidDicomError) as exc:
            raise DeliveryError(f"cannot read the KOS {item.path.name}: {exc}") from exc
        made.append(Notification(study=study, critical=item.finding))
    return made
