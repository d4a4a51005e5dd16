"""What a retrieval ends in: the instances it brought, or a failure that names the method,
the peer and what the peer answered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The methods as a failure names them (DICOM's own names for the services).
METHOD_NAMES = {"move": "C-MOVE", "get": "C-GET", "wado": "WADO-RS"}

Progress = Callable[[int, int | None], None]
"""Told (instances done, instances expected or None) as a retrieval goes."""


def no_progress(_done: int, _total: int | None) -> None:
    return None


class RetrieveError(Exception):
    """A retrieval that failed: ``method`` (C-MOVE, C-GET, WADO-RS), ``peer`` (where the
    source is), ``status`` (what it answered: a DIMSE status, an HTTP status, or the
    network's failure), in the message as in the attributes."""

    def __init__(self, method: str, peer: str, status: str) -> None:
        self.method = METHOD_NAMES.get(method, method)
        self.peer = peer
        self.status = status
        super().__init__(f"{self.method} from {peer} failed: {status}")


@dataclass(frozen=True)
class Retrieved:
    """A retrieval that ended: how many instances the node now holds from it, and how
    many it refused (each refusal is logged by the receive path with its reason)."""

    method: str
    source: str  # the source's name
    stored: int
    refused: int = 0
    warning: str = ""  # a partial success, in the peer's words


def dimse_status(status: int, comment: str = "") -> str:
    """A DIMSE status as a failure names it: ``0xA801`` and the peer's comment."""
    text = f"status 0x{status:04X}"
    return f"{text} ({comment})" if comment else text
