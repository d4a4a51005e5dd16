"""The kinds of destination this node delivers to, each with its send registered.

Importing a kind's transport module registers its send (``node.delivery.transports``);
this module imports them all, so whoever sends through :func:`send` finds every kind.
A new kind adds its settings model (``node.delivery.destinations``), its transport
module, and one import here.
"""

from __future__ import annotations

from node.delivery import cstore, fhir_rest, mllp, stow, webhook
from node.delivery.destinations import Destination
from node.delivery.transports import Outgoing, sender_for

TRANSPORTS = (cstore, stow, mllp, fhir_rest, webhook)  # the last three: critical findings


def send(destination: Destination, files: list[Outgoing], calling_aet: str) -> None:
    """Send ``files`` to ``destination`` by its kind's own transport; DeliveryError if not."""
    sender_for(destination)(destination, files, calling_aet)
