"""What happened on one association: who, from where, what was kept, how it ended.

The record is filled by the association's thread (in the node's process, or in a
receiving process, which sends it back as JSON) and handed to the ``on_ended`` callback
once the association is over: the log's and the audit trail's source.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from node.index import InstanceHeader


@dataclass
class StudyReceived:
    """The instances of one study kept on one association, by SOP Class UID."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_description: str
    sop_classes: Counter[str] = field(default_factory=Counter)
    series: set[str] = field(default_factory=set)  # Series Instance UIDs


@dataclass
class AssociationRecord:
    """One association, for the log and the audit trail."""

    address: str
    port: int
    tls_identity: str | None = None
    calling_ae_title: str = ""
    called_ae_title: str = ""
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    refused: int = 0  # instances answered with a failure status
    studies: dict[str, StudyReceived] = field(default_factory=dict)  # by Study Instance UID
    outcome: str = "closed before an association request"

    @property
    def stored(self) -> int:
        """Instances answered Success."""
        return sum(sum(study.sop_classes.values()) for study in self.studies.values())

    def kept(self, header: InstanceHeader) -> None:
        study = self.studies.get(header.study_instance_uid)
        if study is None:
            study = self.studies[header.study_instance_uid] = StudyReceived(
                header.study_instance_uid,
                header.patient_id,
                header.patient_name,
                header.study_description,
            )
        study.sop_classes[header.sop_class_uid] += 1
        study.series.add(header.series_instance_uid)

    def served_elsewhere(self) -> bytes:
        """What a receiving process learned, for the node's own copy of the record."""
        studies = [
            [s.study_instance_uid, s.patient_id, s.patient_name, s.study_description,
             dict(s.sop_classes), sorted(s.series)]
            for s in self.studies.values()
        ]  # fmt: skip
        return json.dumps({"outcome": self.outcome, "refused": self.refused,
                           "studies": studies}).encode()  # fmt: skip

    def learn(self, data: bytes) -> None:
        """Take over what :meth:`served_elsewhere` sent."""
        served = json.loads(data)
        self.outcome = str(served["outcome"])
        self.refused += int(served["refused"])
        for uid, patient_id, name, description, classes, series in served["studies"]:
            study = self.studies.setdefault(uid, StudyReceived(uid, patient_id, name, description))
            study.sop_classes.update({str(k): int(v) for k, v in classes.items()})
            study.series.update(str(s) for s in series)
