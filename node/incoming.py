"""Where a C-STORE's data set goes as it arrives: the spool's own incoming folder.

The acceptor (:mod:`node.acceptor.association`) writes each data set fragment into an
:class:`~node.storage.IncomingFile` as its PDU is read, never gathering the data set in
memory. The file lives in ``spool/.incoming``, on the spool's filesystem (keeping it is
a rename), is hashed and capped while written, and is refused at once when the disk is
nearly full.
"""

from __future__ import annotations

from io import BytesIO

from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta

from node.settings import Settings
from node.storage import INCOMING, IncomingFile, has_room

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
        arrives. Already refused when the disk is nearly full."""
        incoming = IncomingFile(self.folder, self.limit)
        if not self.has_room():
            incoming.refuse(DISK_NEARLY_FULL)
        meta = BytesIO()
        meta.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(
            meta,
            create_file_meta(
                sop_class_uid=UID(sop_class_uid),
                sop_instance_uid=UID(sop_instance_uid),
                transfer_syntax=UID(transfer_syntax),
            ),
        )
        incoming.write(meta.getvalue())
        return incoming
