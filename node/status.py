"""Named DIMSE status codes the node answers with (PS3.4 Annex B and PS3.7 Annex C)."""

from enum import IntEnum


class StoreStatus(IntEnum):
    SUCCESS = 0x0000
    REFUSED_NOT_AUTHORIZED = 0x0124
    # Refused: Out of Resources (A7xx): disk nearly full, database down; retry later.
    OUT_OF_RESOURCES = 0xA700
    # Refused: Out of Resources, this instance (or its inflated data set) passes a limit.
    INSTANCE_TOO_LARGE = 0xA710
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    # Error (Cxxx): a known SOP Instance UID under another series, study or patient;
    # dcm4chee answers its study mismatch with C802 (Cannot Understand + 0x802) too.
    IDENTITY_CONFLICT = 0xC802
