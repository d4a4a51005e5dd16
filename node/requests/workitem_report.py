"""What the node tells the workitem book while it performs a requested workitem: the
claim, its progress, and how it ends (COMPLETED with its outputs, or CANCELED with the
reason), each an N-SET or N-ACTION through the book (``node.ups.book``, the one writer
of workitems) with the Transaction UID the node claimed it with.

The workitem's JSON model keeps the Performed Procedure Sequence's start from the
claim, so a node restarted meanwhile completes it with the time it really started.
"""

from __future__ import annotations

import logging

from pydicom import Dataset

from node.db.worklist import UpsState
from node.ups import attributes as attrs
from node.ups.book import UpsError, WorkitemBook
from node.ups.rows import new_transaction_uid

log = logging.getLogger(__name__)


def progress_changes(percent: int, description: str) -> Dataset:
    """An N-SET of Procedure Step Progress Information (PS3.4 CC.2.6)."""
    item = Dataset()
    item.ProcedureStepProgress = str(max(0, min(100, percent)))
    item.ProcedureStepProgressDescription = description[:1024]
    changes = Dataset()
    changes.ProcedureStepProgressInformationSequence = [item]
    return changes


class WorkitemReport:
    """The node's requests to the book as the performer of requested workitems; it
    leaves out a progress that says nothing new."""

    def __init__(self, book: WorkitemBook) -> None:
        self.book = book
        self._said: dict[str, tuple[int, str]] = {}

    def claim(self, uid: str) -> str | None:
        """IN PROGRESS with a new Transaction UID (returned); None when another performer
        or a cancel came first."""
        transaction_uid = new_transaction_uid()
        try:
            self.book.change_state(uid, UpsState.IN_PROGRESS, transaction_uid)
            started = Dataset()
            started.PerformedProcedureStepStartDateTime = attrs.dicom_datetime()
            started.OutputInformationSequence = []
            changes = progress_changes(0, "claimed")
            changes.UnifiedProcedureStepPerformedProcedureSequence = [started]
            self.book.set(uid, changes, transaction_uid)
        except UpsError as exc:
            log.info("workitem %s not claimed: %s", uid, exc.message)
            return None
        return transaction_uid

    def progress(self, uid: str, transaction_uid: str, percent: int, description: str) -> None:
        if self._said.get(uid) == (percent, description):
            return
        self.book.set(uid, progress_changes(percent, description), transaction_uid)
        self._said[uid] = (percent, description)
        log.info("workitem %s: %d%% %s", uid, percent, description)

    def _started(self, uid: str) -> str:
        performed = self.book.get(uid).get("UnifiedProcedureStepPerformedProcedureSequence")
        start = (
            str(performed[0].get("PerformedProcedureStepStartDateTime", "")) if performed else ""
        )
        return start or attrs.dicom_datetime()

    def complete(
        self, uid: str, transaction_uid: str, outputs: list[Dataset], description: str
    ) -> None:
        """COMPLETED, the Output Information Sequence referencing ``outputs``."""
        performed = Dataset()
        performed.PerformedProcedureStepStartDateTime = self._started(uid)
        performed.PerformedProcedureStepEndDateTime = attrs.dicom_datetime()
        performed.OutputInformationSequence = outputs
        changes = progress_changes(100, description)
        changes.UnifiedProcedureStepPerformedProcedureSequence = [performed]
        self.book.set(uid, changes, transaction_uid)
        self.book.change_state(uid, UpsState.COMPLETED, transaction_uid)
        self._said.pop(uid, None)
        log.info("workitem %s COMPLETED: %s", uid, description)

    def cancel(self, uid: str, transaction_uid: str, reason: str) -> None:
        """CANCELED, for ``reason`` (Reason For Cancellation, and the progress's words)."""
        changes = progress_changes(100, f"canceled: {reason}")
        changes.ReasonForCancellation = reason[:10240]
        self.book.set(uid, changes, transaction_uid)
        self.book.change_state(uid, UpsState.CANCELED, transaction_uid)
        self._said.pop(uid, None)
        log.warning("workitem %s CANCELED: %s", uid, reason)

    def forget(self, uid: str) -> None:
        self._said.pop(uid, None)
