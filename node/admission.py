"""Who may associate with the Storage SCP, and how many associations at once.

Each association request is judged when its A-ASSOCIATE-RQ arrives (pynetdicom's
``EVT_REQUESTED``, before any negotiation): the called AE title must be the node's;
when there is an allow-list, the calling AE title and the peer's address must match
one of its entries; and the caller must stay under the limits of associations at once,
in total and per calling AE title. A refusal is an A-ASSOCIATE-RJ with the result,
source and reason PS3.8 9.3.4 names for it.

Only associations whose request was accepted are counted: a connection that has not
asked yet holds no place, so idle sockets cannot keep a sender out; the ACSE timeout
closes them.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from pynetdicom.events import Event

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ANY = "*"


class Refusal(Enum):
    """An A-ASSOCIATE-RJ as (result, source, reason/diag.), PS3.8 table 9-21."""

    CALLING_AE_TITLE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)  # permanent, service user
    CALLED_AE_TITLE_NOT_RECOGNIZED = (0x01, 0x01, 0x07)  # permanent, service user
    LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # transient, provider (presentation)


@dataclass(frozen=True)
class CallerRule:
    """One allow-list entry: ``AET``, ``AET@address``, ``AET@network/prefix``;
    ``*`` for the AE title means any."""

    ae_title: str | None  # None: any AE title
    network: Network | None  # None: any host

    @classmethod
    def parse(cls, entry: str) -> CallerRule:
        title, _, host = entry.strip().partition("@")
        title = title.strip()
        if not title or len(title) > 16 or "\\" in title:
            raise ValueError(f"allowed caller {entry!r}: AE title must be 1-16 characters or *")
        network: Network | None = None
        if host.strip() and host.strip() != ANY:
            try:
                network = ipaddress.ip_network(host.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"allowed caller {entry!r}: host must be an IP address or network"
                ) from exc
        return cls(None if title == ANY else title, network)

    def matches(self, ae_title: str, address: str) -> bool:
        if self.ae_title is not None and self.ae_title != ae_title:
            return False
        return self.network is None or _address_in(address, self.network)


def _address_in(address: str, network: Network) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in network


def parse_rules(entries: Iterable[str]) -> tuple[CallerRule, ...]:
    return tuple(CallerRule.parse(entry) for entry in entries)


class Admission:
    """The ``EVT_REQUESTED`` handler of one AE: checks every request, counts the admitted."""

    def __init__(
        self,
        called_ae_title: str,
        rules: Iterable[CallerRule],
        max_associations: int,
        max_per_calling_ae_title: int = 0,
    ) -> None:
        self.called_ae_title = called_ae_title
        self.rules = tuple(rules)
        self.max_associations = max_associations
        self.max_per_calling_ae_title = max_per_calling_ae_title  # 0: only the total applies
        self._lock = threading.Lock()
        self._admitted: list[tuple[Association, str]] = []

    def _allowed(self, calling: str, address: str) -> bool:
        return not self.rules or any(rule.matches(calling, address) for rule in self.rules)

    def _over_limit(self, calling: str) -> bool:
        self._admitted = [(a, t) for a, t in self._admitted if _holds_place(a)]
        if len(self._admitted) >= self.max_associations:
            return True
        per_title = sum(1 for _, title in self._admitted if title == calling)
        return 0 < self.max_per_calling_ae_title <= per_title

    def judge(self, assoc: Association) -> Refusal | None:
        """The refusal this request gets, or None after counting it as admitted."""
        request = assoc.requestor.primitive
        called = str(request.called_ae_title).strip()
        calling = str(request.calling_ae_title).strip()
        if called != self.called_ae_title:
            return Refusal.CALLED_AE_TITLE_NOT_RECOGNIZED
        if not self._allowed(calling, assoc.requestor.address):
            return Refusal.CALLING_AE_TITLE_NOT_RECOGNIZED
        with self._lock:
            if self._over_limit(calling):
                return Refusal.LOCAL_LIMIT_EXCEEDED
            self._admitted.append((assoc, calling))
        return None

    def held(self) -> int:
        """Associations admitted and not yet ended."""
        with self._lock:
            return sum(1 for assoc, _ in self._admitted if _holds_place(assoc))

    def on_requested(self, event: Event) -> None:
        """Bind to ``evt.EVT_REQUESTED``: refuse here, or let pynetdicom negotiate."""
        assoc = event.assoc
        refusal = self.judge(assoc)
        if refusal is None:
            return
        request = assoc.requestor.primitive
        log.warning(
            "refused association %s -> %s from %s: %s",
            str(request.calling_ae_title).strip(),
            str(request.called_ae_title).strip(),
            assoc.requestor.address,
            refusal.name.lower().replace("_", " "),
        )
        assoc.acse.send_reject(*refusal.value)
        # As pynetdicom does after its own rejections: wait until the A-ASSOCIATE-RJ
        # is sent and the peer closed (or ARTIM expired) before the socket is shut.
        assoc.kill()


def _holds_place(assoc: Association) -> bool:
    return assoc.is_alive() and not (assoc.is_released or assoc.is_aborted or assoc.is_rejected)
