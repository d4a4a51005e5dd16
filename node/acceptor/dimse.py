"""DIMSE command sets (PS3.7 9.3, 10.3): the requests the node serves, the responses.

Command sets are Implicit VR Little Endian; pynetdicom's codec reads and writes them.
The node serves C-ECHO, C-STORE and N-EVENT-REPORT (storage commitment reports).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from io import BytesIO

from pydicom import Dataset
from pynetdicom.dsutils import decode, encode

NO_DATA_SET = 0x0101  # Command Data Set Type: no data set follows


class CommandField(enum.IntEnum):
    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100


RESPONSE_TO = {
    CommandField.C_STORE_RQ: CommandField.C_STORE_RSP,
    CommandField.C_ECHO_RQ: CommandField.C_ECHO_RSP,
    CommandField.N_EVENT_REPORT_RQ: CommandField.N_EVENT_REPORT_RSP,
}


@dataclass(frozen=True)
class Command:
    """A request's command set, as the node uses it."""

    field: int
    message_id: int
    sop_class_uid: str  # Affected SOP Class UID
    sop_instance_uid: str  # Affected SOP Instance UID (C-STORE, N-EVENT-REPORT)
    has_data_set: bool
    event_type_id: int | None  # N-EVENT-REPORT

    @classmethod
    def decode(cls, data: bytes) -> Command:
        ds = decode(BytesIO(data), True, True)
        if ds is None or "CommandField" not in ds or "MessageID" not in ds:
            raise ValueError("command set without Command Field or Message ID")
        return cls(
            field=int(ds.CommandField),
            message_id=int(ds.MessageID),
            sop_class_uid=str(ds.get("AffectedSOPClassUID", "") or ""),
            sop_instance_uid=str(ds.get("AffectedSOPInstanceUID", "") or ""),
            has_data_set=int(ds.get("CommandDataSetType", NO_DATA_SET)) != NO_DATA_SET,
            event_type_id=int(ds.EventTypeID) if "EventTypeID" in ds else None,
        )


def response(request: Command, status: int | Dataset) -> bytes:
    """The response command set to ``request`` with ``status`` (a code, or a Dataset with
    Status and optionally Error Comment), no data set following."""
    ds = Dataset()
    ds.AffectedSOPClassUID = request.sop_class_uid
    ds.CommandField = int(RESPONSE_TO[CommandField(request.field)])
    ds.MessageIDBeingRespondedTo = request.message_id
    ds.CommandDataSetType = NO_DATA_SET
    if isinstance(status, Dataset):
        ds.Status = int(status.Status)
        if "ErrorComment" in status:
            ds.ErrorComment = status.ErrorComment
    else:
        ds.Status = int(status)
    if request.sop_instance_uid:
        ds.AffectedSOPInstanceUID = request.sop_instance_uid
    if request.event_type_id is not None:
        ds.EventTypeID = request.event_type_id
    body = encode(ds, True, True)
    assert body is not None
    group = Dataset()
    group.CommandGroupLength = len(body)
    head = encode(group, True, True)
    assert head is not None
    return head + body
