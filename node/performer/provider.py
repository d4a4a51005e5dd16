"""What the node asks of another UPS provider when it performs its workitems (pull mode).

A provider is reached over DIMSE (``node.performer.dimse_provider``) or over UPS-RS
(``node.performer.rs_provider``); both answer the same five questions, so the
performer does not care which. Every failure is a :class:`ProviderError` that names the
provider and what it answered.
"""

from __future__ import annotations

from typing import Protocol

from pydicom import Dataset
from pydicom.sequence import Sequence

from node.db.worklist import UpsState

# The attributes the node asks for when it searches a provider's worklist: what it needs
# to claim, retrieve and order a workitem (PS3.4 Table CC.2.5-3, matching and return keys).
RETURN_KEYWORDS = (
    "SOPInstanceUID",
    "ProcedureStepState",
    "ScheduledProcedureStepPriority",
    "ProcedureStepLabel",
    "WorklistLabel",
    "PatientName",
    "PatientID",
    "ScheduledProcedureStepStartDateTime",
)
RETURN_SEQUENCES = (
    "InputInformationSequence",
    "ScheduledWorkitemCodeSequence",
    "ScheduledStationNameCodeSequence",
    "ReferencedRequestSequence",
)


class ProviderError(Exception):
    """A provider could not be reached or refused a request; the message says which."""


class Claimed(ProviderError):
    """Another performer claimed the workitem first (it is no longer SCHEDULED)."""


class UpsProvider(Protocol):
    """Another UPS provider, as the node's performer uses it."""

    name: str

    def scheduled(self, worklist_label: str) -> list[Dataset]:
        """SCHEDULED workitems on ``worklist_label`` ("" = any), with the return keys."""
        ...

    def get(self, uid: str) -> Dataset:
        """The whole workitem (N-GET / RetrieveWorkitem)."""
        ...

    def claim(self, uid: str, transaction_uid: str) -> None:
        """Change it to IN PROGRESS under ``transaction_uid``; Claimed if someone was first."""
        ...

    def update(self, uid: str, transaction_uid: str, changes: Dataset) -> None:
        """N-SET / UpdateWorkitem with the Transaction UID it was claimed with."""
        ...

    def finish(self, uid: str, transaction_uid: str, state: UpsState) -> None:
        """Change it to COMPLETED or CANCELED (N-ACTION / ChangeWorkitemState)."""
        ...


def search_keys(worklist_label: str) -> Dataset:
    """The C-FIND identifier (or query) for SCHEDULED workitems on ``worklist_label``."""
    query = Dataset()
    for keyword in RETURN_KEYWORDS:
        setattr(query, keyword, "")
    for keyword in RETURN_SEQUENCES:
        setattr(query, keyword, Sequence([]))
    query.ProcedureStepState = UpsState.SCHEDULED.value
    query.WorklistLabel = worklist_label
    return query


def state_change(state: UpsState, transaction_uid: str) -> Dataset:
    """The N-ACTION Change UPS State information (PS3.4 CC.2.4.3)."""
    info = Dataset()
    info.ProcedureStepState = state.value
    info.TransactionUID = transaction_uid
    return info
