"""DIMSE command sets (PS3.7 9.3, 10.3): the requests the node serves, the responses.

Command sets are Implicit VR Little Endian; pynetdicom's codec reads and writes them.
The node serves C-ECHO, C-STORE and N-EVENT-REPORT (storage commitment reports).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from io import BytesIO

from pydicom import Dataset
from pydicom.multival import MultiValue
from pynetdicom.dsutils import decode

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


def _element(element: int, value: bytes) -> bytes:
    """One group 0000 element, Implicit VR Little Endian."""
    return _IMPLICIT_HEADER.pack(0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _lo(value: str) -> bytes:
    # LO holds 64 characters; a backslash would make it several values.
    raw = value.replace("\\", "/")[:64].encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


_IMPLICIT_HEADER = struct.Struct("<HHI")


def response(request: Command, status: int | Dataset) -> bytes:
    """The response command set to ``request`` with ``status`` (a code, or a Dataset with
    Status and optionally Error Comment), no data set following; encoded by hand, in
    ascending tag order, because it is written once per instance received."""
    if isinstance(status, Dataset):
        value = status.get("ErrorComment", "") or ""
        code = int(status.Status)
        comment = "/".join(value) if isinstance(value, MultiValue | list) else str(value)
    else:
        code, comment = int(status), ""
    elements = [
        _element(0x0002, _uid(request.sop_class_uid)),
        _element(0x0100, _us(RESPONSE_TO[CommandField(request.field)])),
        _element(0x0120, _us(request.message_id)),
        _element(0x0800, _us(NO_DATA_SET)),
        _element(0x0900, _us(code)),
    ]
    if comment:
        elements.append(_element(0x0902, _lo(comment)))
    if request.sop_instance_uid:
        elements.append(_element(0x1000, _uid(request.sop_instance_uid)))
    if request.event_type_id is not None:
        elements.append(_element(0x1002, _us(request.event_type_id)))
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body
