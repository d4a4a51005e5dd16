"""The UPS state machine (PS3.4 CC.1.1, Table CC.1.1-2) and the statuses it answers.

A workitem is created SCHEDULED, is claimed IN PROGRESS with a Transaction UID, and
ends COMPLETED or CANCELED; it never goes back. The statuses are those of PS3.4 CC.2
(Tables CC.2.1-2 change state, CC.2.2-2 request cancel, CC.2.3-2 subscribe, CC.2.5-2
create, CC.2.6-1 set, CC.2.7-1 get), named here once; ``UpsError`` carries one.
"""

from __future__ import annotations

from enum import IntEnum

from node.db.worklist import UpsState


class UpsStatus(IntEnum):
    """The DIMSE statuses the UPS provider answers with (PS3.4 CC.2; PS3.7 C)."""

    SUCCESS = 0x0000
    OPTIONAL_ATTRIBUTES_NOT_SUPPORTED = 0x0001  # warning
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_ACTION = 0x0123
    INVALID_ATTRIBUTE_VALUE = 0x0106
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    PROCESSING_FAILURE = 0x0110
    OUT_OF_RESOURCES = 0xA700
    IDENTIFIER_DOES_NOT_MATCH = 0xA900
    CREATED_WITH_MODIFICATIONS = 0xB300  # warning
    DELETION_LOCK_NOT_GRANTED = 0xB301  # warning
    ALREADY_CANCELED = 0xB304  # warning: already in the requested state of CANCELED
    COERCED_INVALID_VALUES = 0xB305  # warning
    ALREADY_COMPLETED_WARNING = 0xB306  # warning: already in the requested state
    MAY_NO_LONGER_BE_UPDATED = 0xC300
    WRONG_TRANSACTION_UID = 0xC301
    ALREADY_IN_PROGRESS = 0xC302
    ONLY_SCHEDULED_BY_CREATE = 0xC303
    FINAL_STATE_NOT_MET = 0xC304
    NO_SUCH_WORKITEM = 0xC307  # no such SOP Instance, or not a UPS this SCP manages
    RECEIVING_AE_UNKNOWN = 0xC308
    CREATED_NOT_SCHEDULED = 0xC309
    NOT_IN_PROGRESS = 0xC310
    ALREADY_COMPLETED = 0xC311
    PERFORMER_CANNOT_BE_CONTACTED = 0xC312
    PERFORMER_CHOOSES_NOT_TO_CANCEL = 0xC313
    ACTION_NOT_APPROPRIATE = 0xC314
    NO_EVENT_REPORTS = 0xC315


WARNINGS = frozenset(
    {
        UpsStatus.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED,
        UpsStatus.CREATED_WITH_MODIFICATIONS,
        UpsStatus.DELETION_LOCK_NOT_GRANTED,
        UpsStatus.ALREADY_CANCELED,
        UpsStatus.COERCED_INVALID_VALUES,
        UpsStatus.ALREADY_COMPLETED_WARNING,
    }
)


class UpsError(Exception):
    """A UPS request refused: ``status`` is the DIMSE status (``UpsStatus``), the
    message says why in words (sent as the Error Comment, at most 64 characters there)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message

    def __repr__(self) -> str:
        return f"UpsError(0x{self.status:04X}, {self.message!r})"


FINAL = frozenset({UpsState.COMPLETED, UpsState.CANCELED})


def check_change(
    current: UpsState, target: UpsState, held_uid: str | None, given_uid: str | None
) -> UpsStatus:
    """Judge an N-ACTION Change UPS State against Table CC.1.1-2.

    Returns SUCCESS when the change is to be made, or a warning status when the
    workitem is already in the requested final state (nothing to do); raises
    ``UpsError`` with the failure status otherwise. The final-state requirements
    (C304) are checked by the caller, which knows the attributes.
    """
    if target is UpsState.SCHEDULED:
        raise UpsError(
            UpsStatus.ONLY_SCHEDULED_BY_CREATE, "a UPS becomes SCHEDULED by N-CREATE only"
        )
    if current in FINAL:
        if current is target:
            return (
                UpsStatus.ALREADY_CANCELED
                if target is UpsState.CANCELED
                else UpsStatus.ALREADY_COMPLETED_WARNING
            )
        raise UpsError(UpsStatus.MAY_NO_LONGER_BE_UPDATED, f"the UPS is already {current.value}")
    if target is UpsState.IN_PROGRESS:
        if current is UpsState.IN_PROGRESS:
            raise UpsError(UpsStatus.ALREADY_IN_PROGRESS, "the UPS is already IN PROGRESS")
        if not given_uid:
            raise UpsError(
                UpsStatus.WRONG_TRANSACTION_UID, "claiming a UPS needs a Transaction UID"
            )
        return UpsStatus.SUCCESS
    # COMPLETED or CANCELED
    if current is UpsState.SCHEDULED:
        raise UpsError(UpsStatus.NOT_IN_PROGRESS, "the UPS is not yet IN PROGRESS")
    if not given_uid or given_uid != held_uid:
        raise UpsError(
            UpsStatus.WRONG_TRANSACTION_UID, "the correct Transaction UID was not provided"
        )
    return UpsStatus.SUCCESS


def check_set(current: UpsState, held_uid: str | None, given_uid: str | None) -> None:
    """Judge an N-SET (Table CC.2.6-1): a SCHEDULED UPS may be set without a Transaction
    UID; an IN PROGRESS one only with the one it was claimed with; a final one never."""
    if current in FINAL:
        raise UpsError(UpsStatus.MAY_NO_LONGER_BE_UPDATED, f"the UPS is {current.value}")
    if current is UpsState.SCHEDULED:
        return  # nobody holds a Transaction UID yet: one given is not checked
    if not given_uid or given_uid != held_uid:
        raise UpsError(
            UpsStatus.WRONG_TRANSACTION_UID, "the correct Transaction UID was not provided"
        )
