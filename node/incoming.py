"""Where pynetdicom writes a C-STORE's data set as it arrives: the spool's own folder.

With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom writes each data set fragment to a
file as the PDUs arrive, instead of gathering it in memory. pynetdicom 3.0 opens
that file with ``tempfile.NamedTemporaryFile`` in the system temporary folder, with
no setting for the folder; the node gives it its own opener (``install``, at SCP
start, never at import) so the file is an :class:`~node.storage.IncomingFile` in
``spool/.incoming``: on the spool's filesystem (keeping it is a rename), hashed and
capped while written, and refused at once when the disk is nearly full. The setting
and the opener are process-wide: one Storage SCP per process.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from pynetdicom import _config, dimse_messages
from pynetdicom.events import Event

from node.settings import Settings
from node.storage import INCOMING, IncomingFile, has_room

log = logging.getLogger(__name__)

DISK_NEARLY_FULL = "disk nearly full (free space under AINODE_MIN_FREE_BYTES)"


class IncomingSpool:
    """The files pynetdicom is writing or has written, until the handler claims them."""

    def __init__(self, settings: Settings) -> None:
        self.folder = settings.spool_dir / INCOMING
        self.limit = settings.max_instance_bytes
        self.min_free = settings.min_free_bytes
        self._files: dict[str, IncomingFile] = {}
        self._lock = threading.Lock()
        self._previous: tuple[bool, Any] | None = None

    def has_room(self) -> bool:
        return has_room(self.folder, self.min_free)

    def open(self, *_args: Any, **_kwargs: Any) -> IncomingFile:
        """pynetdicom's ``NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")``."""
        incoming = IncomingFile(self.folder, self.limit)
        if not self.has_room():
            incoming.refuse(DISK_NEARLY_FULL)
        with self._lock:
            self._files[incoming.name] = incoming
        return incoming

    def claim(self, path: Path | str) -> IncomingFile | None:
        """The file pynetdicom wrote for one C-STORE; the caller keeps or discards it."""
        with self._lock:
            return self._files.pop(str(path), None)

    def abandon(self, event: Event) -> None:
        """An association ended: remove what its aborted transfers left half written."""
        reader = getattr(event.assoc, "dul", None)
        with self._lock:
            left = [f for f in self._files.values() if f.creator is reader]
            for incoming in left:
                del self._files[incoming.name]
        for incoming in left:
            log.info("removing a partial data set from %s", event.assoc.requestor.ae_title)
            incoming.discard()

    def install(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._previous = (_config.STORE_RECV_CHUNKED_DATASET, dimse_messages.NamedTemporaryFile)
        _config.STORE_RECV_CHUNKED_DATASET = True
        dimse_messages.NamedTemporaryFile = self.open  # type: ignore[assignment]

    def uninstall(self) -> None:
        if self._previous is not None:
            _config.STORE_RECV_CHUNKED_DATASET, dimse_messages.NamedTemporaryFile = self._previous
            self._previous = None
        with self._lock:
            left, self._files = list(self._files.values()), {}
        for incoming in left:
            incoming.discard()
