"""What the receive path encodes by hand, once per instance, against pydicom's own
encoding of the same content: the file meta written before a received data set (so
digests stay what they were), and the C-STORE, C-ECHO and N-EVENT-REPORT responses."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta, decode, encode

from node.acceptor.dimse import Command, CommandField, response
from node.incoming import file_meta

UIDS = ["1.2.3", "1.2.34", "1.2.840.10008.5.1.4.1.1.2", "2.25." + "9" * 59]
SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.80"]


@pytest.mark.parametrize("instance_uid", UIDS)
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_file_meta_is_what_pydicom_writes(instance_uid: str, syntax: str) -> None:
    expected = BytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    meta = create_file_meta(
        sop_class_uid=UID("1.2.840.10008.5.1.4.1.1.2"),
        sop_instance_uid=UID(instance_uid),
        transfer_syntax=UID(syntax),
    )
    write_file_meta_info(expected, meta)
    assert file_meta("1.2.840.10008.5.1.4.1.1.2", instance_uid, syntax) == expected.getvalue()


def _reference(encoded: bytes) -> bytes:
    """The same elements encoded by pydicom, group length first."""
    elements = Dataset()
    for element in decode(BytesIO(encoded), True, True):
        if element.tag != 0x00000000:
            elements.add(element)
    body = encode(elements, True, True)
    group = Dataset()
    group.CommandGroupLength = len(body)
    head = encode(group, True, True)
    assert head is not None and body is not None
    return head + body


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (Command(CommandField.C_STORE_RQ, 7, UIDS[2], UIDS[1], True, None), 0x0000),
        (Command(CommandField.C_STORE_RQ, 65535, UIDS[2], UIDS[0], True, None), 0xC802),
        (Command(CommandField.C_ECHO_RQ, 1, "1.2.840.10008.1.1", "", False, None), 0x0000),
        (
            Command(
                CommandField.N_EVENT_REPORT_RQ,
                3,
                "1.2.840.10008.1.20.1",
                "1.2.840.10008.1.20.1.1",
                True,
                2,
            ),
            0x0110,
        ),  # fmt: skip
    ],
)
def test_responses_are_what_pydicom_encodes(request_: Command, status: int) -> None:
    encoded = response(request_, status)
    assert encoded == _reference(encoded)
    ds = decode(BytesIO(encoded), True, True)
    assert ds.MessageIDBeingRespondedTo == request_.message_id
    assert ds.CommandField == request_.field | 0x8000
    assert ds.Status == status
    assert ds.CommandDataSetType == 0x0101


def test_a_failure_comment_is_one_value_of_at_most_64_characters() -> None:
    status = Dataset()
    status.Status = 0xA700
    status.ErrorComment = "cannot store: disk\\full " + "x" * 80
    request = Command(CommandField.C_STORE_RQ, 2, UIDS[2], UIDS[3], True, None)
    ds = decode(BytesIO(response(request, status)), True, True)
    assert ds.ErrorComment.startswith("cannot store: disk/full")
    assert len(ds.ErrorComment) <= 64
    assert ds.AffectedSOPInstanceUID == UIDS[3]
