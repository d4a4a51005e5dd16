"""Who may associate with the Storage SCP, and how many associations at once.

Each association request is judged when its A-ASSOCIATE-RQ arrives (before any
negotiation, :mod:`node.acceptor.association`): the called AE title must be the node's;
when there is an allow-list, the calling AE title and the peer's address must match
one of its entries; and the caller must stay under the limits of associations at once,
in total and per calling AE title. A refusal is an A-ASSOCIATE-RJ with the result,
source and reason PS3.8 9.3.4 names for it.

Only associations whose request was accepted are counted, until they end: a connection
that has not asked yet holds no place, so idle sockets cannot keep a sender out; the
ACSE timeout closes them.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

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
    """Judges every association request and counts the admitted until they end."""

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
        self._admitted: Counter[str] = Counter()  # calling AE title: associations held

    def _allowed(self, calling: str, address: str) -> bool:
        return not self.rules or any(rule.matches(calling, address) for rule in self.rules)

    def _over_limit(self, calling: str) -> bool:
        if self.held_locked() >= self.max_associations:
            return True
        return 0 < self.max_per_calling_ae_title <= self._admitted[calling]

    def admit(self, calling: str, called: str, address: str) -> Refusal | None:
        """The refusal this request gets, or None after counting it as admitted (then
        :meth:`release` it when the association ends)."""
        refusal = self._judge(calling, called, address)
        if refusal is not None:
            log.warning(
                "refused association %s -> %s from %s: %s",
                calling,
                called,
                address,
                refusal.name.lower().replace("_", " "),
            )
        return refusal

    def _judge(self, calling: str, called: str, address: str) -> Refusal | None:
        if called != self.called_ae_title:
            return Refusal.CALLED_AE_TITLE_NOT_RECOGNIZED
        if not self._allowed(calling, address):
            return Refusal.CALLING_AE_TITLE_NOT_RECOGNIZED
        with self._lock:
            if self._over_limit(calling):
                return Refusal.LOCAL_LIMIT_EXCEEDED
            self._admitted[calling] += 1
        return None

    def release(self, calling: str) -> None:
        """An admitted association ended (released, aborted or its connection lost)."""
        with self._lock:
            self._admitted[calling] -= 1
            if self._admitted[calling] <= 0:
                del self._admitted[calling]

    def held_locked(self) -> int:
        return sum(self._admitted.values())

    def held(self) -> int:
        """Associations admitted and not yet ended."""
        with self._lock:
            return self.held_locked()
