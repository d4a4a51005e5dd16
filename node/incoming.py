"""Where a C-STORE's data set goes as it arrives: the spool's own incoming folder.

The acceptor (:mod:`node.acceptor.association`) writes each data set fragment into an
:class:`~node.storage.IncomingFile` as its PDU is read, never gathering the data set in
memory. The file lives in ``spool/.incoming``, on the spool's filesystem (keeping it is
a rename), is hashed and capped while written, and is refused at once when the disk is
nearly full.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from node.settings import Settings
from node.storage import INCOMING, IncomingFile, has_room
from node.uids import validate_uid

DISK_NEARLY_FULL = "disk nearly full (free space under AINODE_MIN_FREE_BYTES)"


class IncomingSpool:
    """Opens the files received data sets are written to."""

    def __init__(self, settings: Settings) -> None:
        self.folder = settings.spool_dir / INCOMING
        self.limit = settings.max_instance_bytes
        self.min_free = settings.min_free_bytes

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def has_room(self) -> bool:
        return has_room(self.folder, self.min_free)

    def open(self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> IncomingFile:
        """A new incoming file, a PS3.10 file: preamble, prefix and File Meta Information
        (from the C-STORE request and its presentation context), then the data set as it
        arrives. Already refused when the disk is nearly full. Raises
        :class:`~node.uids.InvalidUID` for a UID that is not one (before any file)."""
        meta = file_meta(
            validate_uid(sop_class_uid, "Affected SOP Class UID"),
            validate_uid(sop_instance_uid, "Affected SOP Instance UID"),
            transfer_syntax,
        )
        incoming = IncomingFile(self.folder, self.limit)
        if not self.has_room():
            incoming.refuse(DISK_NEARLY_FULL)
        incoming.write(meta)
        return incoming


def _short(tag: int, vr: bytes, value: bytes) -> bytes:
    """An Explicit VR Little Endian element with a 2-byte length."""
    return struct.pack("<HH2sH", 0x0002, tag, vr, len(value)) + value


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for a received data set,
    byte for byte as pydicom writes pynetdicom's ``create_file_meta``; encoded here
    because it is written once per instance received."""
    rest = b"".join((
        struct.pack("<HH2s2sI", 0x0002, 0x0001, b"OB", b"", 2) + b"\x00\x01",
        _short(0x0002, b"UI", _padded(sop_class_uid, b"\0")),
        _short(0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
        _short(0x0010, b"UI", _padded(transfer_syntax, b"\0")),
        _short(0x0012, b"UI", _padded(PYNETDICOM_IMPLEMENTATION_UID, b"\0")),
        _short(0x0013, b"SH", _padded(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
    ))  # fmt: skip
    group_length = _short(0x0000, b"UL", struct.pack("<I", len(rest)))
    return b"\x00" * 128 + b"DICM" + group_length + rest
