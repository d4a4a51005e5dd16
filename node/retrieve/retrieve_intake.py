"""Retrieved instances into the node's own receive path, in the node's process.

C-GET and WADO-RS bring instances to the node itself rather than to its Storage SCP.
Each is handed to the one C-STORE store path (:func:`node.store.handle_store`) exactly
as the acceptor hands a C-STORE's data set: written as it arrives into an incoming file
of the spool (:meth:`node.incoming.IncomingSpool.open`: the node's own File Meta
Information, hashed and capped while written, refused when the disk is nearly full),
its header read, indexed by the group committer (durable before its row commits,
identity conflicts refused, an identical resend discarded). Nothing is gathered whole
in memory: bytes are passed on as they come, after the File Meta Information that
names the instance.

Why in the process rather than a C-STORE onward to the node's own port: the path is the
same code, without a second encoding and network hop per instance, and without asking
the admission (which judges who may associate with the node, not what the node itself
fetched from a configured source) or a TLS-only node for a loopback client.

The retrieval counts as one association from the source: once it ends, its
:class:`~node.acceptor.record.AssociationRecord` goes to the Storage SCP's
``on_association`` callback, so its series are marked released (completion's
evidence), the scheduler is woken and the audit trail records the instances received,
as for a study the PACS pushed.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

from pydicom import Dataset
from pydicom.filereader import read_dataset

from node.acceptor.record import AssociationRecord
from node.audit.receiving import RELEASED
from node.retrieve.retrieve_settings import RetrieveSource
from node.status import StoreStatus
from node.storage import IncomingFile
from node.store import StorePath, StoreRequest, handle_store
from node.uids import InvalidUID

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read from a file at a time
_PREFIX = 132  # preamble and "DICM"
_GROUP_LENGTH = struct.Struct("<HH2sHI")  # (0002,0000) UL, Explicit VR Little Endian


def _status(status: int | Dataset) -> tuple[int, str]:
    if isinstance(status, Dataset):
        return int(status.Status), str(status.get("ErrorComment", ""))
    return int(status), ""


class InstanceWriter:
    """One PS3.10 file as its bytes arrive: its File Meta Information read first, then
    the data set streamed into an incoming file of the spool; :meth:`finish` hands it
    to the store path and returns (status, comment)."""

    def __init__(self, intake: StudyIntake) -> None:
        self.intake = intake
        self._head = bytearray()
        self._incoming: IncomingFile | None = None
        self._transfer_syntax = ""
        self._sop_instance_uid = ""
        self._error = ""

    def write(self, data: bytes | memoryview) -> None:
        if self._incoming is not None:
            self._incoming.write(data)
            return
        if self._error:
            return
        self._head += data
        if len(self._head) >= _PREFIX + _GROUP_LENGTH.size:
            self._open()

    def _open(self) -> None:
        head = self._head
        if head[128:_PREFIX] != b"DICM":
            self._error = "not a DICOM file (no DICM prefix)"
            return
        group, element, vr, size, length = _GROUP_LENGTH.unpack_from(head, _PREFIX)
        if (group, element, vr, size) != (2, 0, b"UL", 4):
            self._error = "File Meta Information without its group length"
            return
        end = _PREFIX + _GROUP_LENGTH.size + length
        if len(head) < end:
            return  # the rest of the File Meta Information is still to come
        try:
            meta = read_dataset(BytesIO(bytes(head[_PREFIX:end])), False, True)
            sop_class = str(meta.MediaStorageSOPClassUID)
            self._sop_instance_uid = str(meta.MediaStorageSOPInstanceUID)
            self._transfer_syntax = str(meta.TransferSyntaxUID)
            incoming = self.intake.store.incoming.open(
                sop_class, self._sop_instance_uid, self._transfer_syntax
            )
        except (InvalidUID, AttributeError, ValueError) as exc:
            self._error = f"unreadable File Meta Information: {exc}"
            return
        self._incoming = incoming
        incoming.write(memoryview(head)[end:])
        self._head = bytearray()

    def finish(self) -> tuple[int, str]:
        """Hand the instance to the store path; (DIMSE status, comment)."""
        if self._incoming is None:
            self._error = self._error or "not a DICOM file (too short)"
            return self.intake.refused(self._error)
        request = StoreRequest(
            calling_ae_title=self.intake.source.sender,
            transfer_syntax=self._transfer_syntax,
            affected_sop_instance_uid=self._sop_instance_uid,
            incoming=self._incoming,
        )
        verdict = handle_store(self.intake.store, request)  # discards what it does not keep
        status, comment = _status(verdict.status)
        if status == StoreStatus.SUCCESS and verdict.header is not None:
            self.intake.record.kept(verdict.header)
            return status, comment
        return self.intake.refused(comment or f"status 0x{status:04X}", status)

    def abandon(self) -> None:
        """The instance will not be finished (its source failed): drop its bytes."""
        if self._incoming is not None:
            self._incoming.discard()


class StudyIntake:
    """The instances of one retrieval from ``source``, into the store path; :meth:`close`
    ends it as one association (module docstring)."""

    def __init__(
        self,
        store: StorePath,
        source: RetrieveSource,
        called_ae_title: str,
        on_ended: Callable[[AssociationRecord], None],
    ) -> None:
        self.store = store
        self.source = source
        self.on_ended = on_ended
        address, port = _where(source)
        self.record = AssociationRecord(
            address=address,
            port=port,
            calling_ae_title=source.sender,
            called_ae_title=called_ae_title,
            outcome="retrieving",
        )
        self.last_refusal = ""

    @property
    def stored(self) -> int:
        return self.record.stored

    def instance(self) -> InstanceWriter:
        return InstanceWriter(self)

    def refused(self, reason: str, status: int = StoreStatus.CANNOT_UNDERSTAND) -> tuple[int, str]:
        self.record.refused += 1
        self.last_refusal = reason
        log.warning("retrieved instance from %s refused: %s", self.source.name, reason)
        return int(status), reason

    def store_file(self, path: Path) -> tuple[int, str]:
        """A PS3.10 file on disk (pynetdicom's, for C-GET) into the store path."""
        writer = self.instance()
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                writer.write(chunk)
        return writer.finish()

    def close(self, outcome: str = RELEASED) -> None:
        """The retrieval ended (``RELEASED``: completely; else why not): the record goes
        to the SCP's association callback."""
        self.record.outcome = outcome
        if not self.record.stored and not self.record.refused:
            return  # nothing arrived (the source refused or held nothing): no association
        try:
            self.on_ended(self.record)
        except Exception:  # noqa: BLE001 - the instances are kept; only the evidence is lost
            log.exception("association callback of a retrieval failed")


def _where(source: RetrieveSource) -> tuple[str, int]:
    """The source's host and port, for the record."""
    ae = source.ae
    if source.method != "wado" and ae is not None:
        return ae.host, ae.port
    url = urlsplit(source.wado_url or "")
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
