"""Named DIMSE status codes the node answers with (PS3.4 Annex B and PS3.7 Annex C)."""

from enum import IntEnum


class StoreStatus(IntEnum):
    SUCCESS = 0x0000
    REFUSED_NOT_AUTHORIZED = 0x0124
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
