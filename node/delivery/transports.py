"""The sends, one per kind of destination, registered by the destination's settings model,
and the one error every send raises (DeliveryError).

Like mercure's ``@handler_for(DicomTarget)``: a kind's transport module registers its
send with ``@sends(ItsDestination)``, and the delivery pass looks the send up by the
destination's type, so adding a kind adds a module and changes no existing one. A send
returns once the destination holds every file it was given, or raises DeliveryError.
``node.delivery.kinds`` imports every transport module, so their sends are registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from node.delivery.critical_facts import CriticalFacts
from node.delivery.destinations import Destination


class DeliveryError(Exception):
    """A destination could not be reached or refused an object; the message says which.

    Every kind of destination fails with it (C-STORE, STOW-RS, storage commitment), so
    the delivery pass records any of them the same way: as a failed attempt.
    """


@dataclass(frozen=True)
class Outgoing:
    """One result file on its way: where it is, and which SOP instance it holds.

    ``finding``: for a job's Key Object Selection, the job's critical findings, which
    the notifications (``hl7``, ``fhir``, ``webhook``) tell; None for other results.
    """

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    finding: CriticalFacts | None = None


Send = Callable[[Any, list[Outgoing], str], None]
"""(destination of its kind, files, the node's calling AE title) -> None."""

SendT = TypeVar("SendT", bound=Send)

_SENDS: dict[type[Destination], Send] = {}


def sends(model: type[Destination]) -> Callable[[SendT], SendT]:
    """Register the decorated function as the send of destinations of ``model``."""

    def register(send: SendT) -> SendT:
        if model in _SENDS:
            raise ValueError(f"{model.__name__} already has a send")
        _SENDS[model] = send
        return send

    return register


def sender_for(destination: Destination) -> Send:
    """The send registered for ``destination``'s kind; DeliveryError when none is."""
    for model in type(destination).__mro__:
        send = _SENDS.get(model)
        if send is not None:
            return send
    raise DeliveryError(f"no transport is registered for {type(destination).__name__}")
