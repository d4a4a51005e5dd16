"""What C-MOVE and C-GET share: the association with the source, and reading the
responses of a retrieve request (pending, then final, PS3.4 C.4.2.1.5 and C.4.3.1.3)
into what the node holds or a failure that names the method, the peer and the status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association

from node.network import set_tcp_nodelay
from node.retrieve.retrieve_outcome import Progress, RetrieveError, dimse_status
from node.retrieve.retrieve_settings import RetrieveSource

PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
WARNING = 0xB000  # sub-operations complete, one or more failed or had warnings
CANCELED = 0xFE00
SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class Timeouts:
    """How long the source may stay silent, and when the whole retrieval must end."""

    network: float
    deadline: float  # time.monotonic() by which the retrieval ends

    @classmethod
    def starting_now(cls, network: float, total: float) -> Timeouts:
        return cls(network, time.monotonic() + total)


def make_ae(calling_ae_title: str, timeouts: Timeouts) -> AE:
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = timeouts.network
    ae.dimse_timeout = timeouts.network
    ae.network_timeout = timeouts.network
    ae.maximum_pdu_size = 0  # no limit of its own: the source sends as large PDUs as it likes
    return ae


def associate(ae: AE, source: RetrieveSource, method: str, **kwargs: object) -> Association:
    """An established association with ``source``, or RetrieveError saying why not."""
    address = source.ae
    assert address is not None  # RetrieveSource requires it for move and get
    handlers = list(kwargs.pop("evt_handlers", []))  # type: ignore[call-overload]
    assoc = ae.associate(
        address.host,
        address.port,
        ae_title=address.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay), *handlers],
        **kwargs,  # type: ignore[arg-type]
    )
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        status = "association rejected"
    elif assoc.is_aborted:
        status = "association aborted"
    else:
        status = "no association (the peer did not answer)"
    raise RetrieveError(method, source.peer, status)


def silence(assoc: Association) -> str:
    """Why a request got no response, in words."""
    # The association's own thread records a peer's A-ABORT a moment after the DIMSE
    # layer stopped waiting for it: give it that moment (only on this failure path).
    settled = time.monotonic() + SETTLE_SECONDS
    while assoc.is_established and not assoc.is_aborted and time.monotonic() < settled:
        time.sleep(0.01)
    if assoc.is_aborted or not assoc.is_established:
        return "the peer ended the association without a response (refused the request)"
    return "no response within the network timeout"


@dataclass(frozen=True)
class SubOperations:
    """A retrieve request's final counts (PS3.4 C.4.2.1.5)."""

    completed: int
    failed: int
    warning: int

    @classmethod
    def of(cls, status: Dataset) -> SubOperations:
        return cls(
            int(status.get("NumberOfCompletedSuboperations", 0) or 0),
            int(status.get("NumberOfFailedSuboperations", 0) or 0),
            int(status.get("NumberOfWarningSuboperations", 0) or 0),
        )


def follow(
    responses: Iterator[tuple[Dataset, Dataset | None]],
    assoc: Association,
    method: str,
    source: RetrieveSource,
    timeouts: Timeouts,
    progress: Progress,
) -> tuple[SubOperations, str]:
    """Read a C-MOVE or C-GET's responses to the final one: its counts and a warning
    in words ("" if none); RetrieveError on a failure, a silent peer or the deadline."""
    for status, _identifier in responses:
        if not status or "Status" not in status:
            raise RetrieveError(method, source.peer, silence(assoc))
        code = int(status.Status)
        if code in PENDING:
            done = SubOperations.of(status)
            remaining = status.get("NumberOfRemainingSuboperations")
            finished = done.completed + done.failed + done.warning
            total = finished + int(remaining) if remaining is not None else None
            try:
                progress(done.completed + done.warning, total)
            except BaseException:  # the caller stops it (a cancel): the source stops sending
                assoc.abort()
                raise
            if time.monotonic() > timeouts.deadline:
                assoc.abort()
                raise RetrieveError(method, source.peer, "not finished within the retrieve timeout")
            continue
        counts = SubOperations.of(status)
        comment = str(status.get("ErrorComment", "") or "")
        if code == SUCCESS:
            return counts, ""
        if code == WARNING or 0xB000 <= code <= 0xBFFF:
            if counts.completed + counts.warning == 0:
                status = dimse_status(code, "every sub-operation failed")
                raise RetrieveError(method, source.peer, status)
            warning = f"{counts.failed} sub-operations failed, {counts.warning} with warnings"
            return counts, f"{dimse_status(code, comment)}: {warning}"
        if code == CANCELED:
            raise RetrieveError(method, source.peer, dimse_status(code, "canceled"))
        raise RetrieveError(method, source.peer, dimse_status(code, comment))
    raise RetrieveError(method, source.peer, "the peer ended without a final response")
