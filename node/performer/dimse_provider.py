"""Another UPS provider over DIMSE: C-FIND on the UPS Pull SOP Class, N-GET, N-SET and
N-ACTION (PS3.4 CC.2), one short association per request.

The N- requests name the UPS Push SOP Class as the standard asks (PS3.4 CC.2: "the SOP
Class UID ... shall be the UPS Push SOP Class UID") over the Pull presentation context
the provider accepted; pynetdicom allows that since 1.5.2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import UnifiedProcedureStepPull, UnifiedProcedureStepPush

from node.db.worklist import UpsState
from node.delivery.destinations import DicomAddress
from node.performer.provider import Claimed, ProviderError, search_keys, state_change

CHANGE_UPS_STATE = 1  # N-ACTION Action Type ID, PS3.4 CC.2.4.2
# Statuses that mean "someone else has it": not SCHEDULED any more (PS3.4 CC.2.4.4).
_ALREADY_CLAIMED = {0xC302, 0xC300, 0xC310, 0xC311, 0xC312}
T = TypeVar("T")


class DimseProvider:
    """A UPS provider at ``address``, called as ``calling_ae``."""

    def __init__(
        self, name: str, address: DicomAddress, calling_ae: str, timeout: float = 30.0
    ) -> None:
        self.name = name
        self.address = address
        self.calling_ae = calling_ae
        self.timeout = timeout

    @contextmanager
    def _association(self) -> Iterator[Association]:
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(UnifiedProcedureStepPull)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        assoc = ae.associate(self.address.host, self.address.port, ae_title=self.address.ae_title)
        if not assoc.is_established:
            raise ProviderError(
                f"UPS provider {self.name} ({self.address}) refused the association"
            )
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _status(self, what: str, status: Dataset) -> int:
        if "Status" not in status:
            raise ProviderError(f"{what} at {self.name}: no answer (timed out or aborted)")
        return int(status.Status)

    def _request(self, what: str, call: Callable[[Association], tuple[Dataset, T]]) -> T:
        with self._association() as assoc:
            status, reply = call(assoc)
        code = self._status(what, status)
        if code in _ALREADY_CLAIMED and what.startswith("claim"):
            raise Claimed(f"{what} at {self.name}: status 0x{code:04X}")
        if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:  # warnings still did it
            comment = status.get("ErrorComment", "")
            raise ProviderError(f"{what} at {self.name}: status 0x{code:04X} {comment}".strip())
        return reply

    def scheduled(self, worklist_label: str) -> list[Dataset]:
        found: list[Dataset] = []
        with self._association() as assoc:
            for status, identifier in assoc.send_c_find(
                search_keys(worklist_label), UnifiedProcedureStepPull
            ):
                code = self._status("C-FIND", status)
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    found.append(identifier)
                elif code != 0x0000:
                    raise ProviderError(f"C-FIND at {self.name}: status 0x{code:04X}")
        return found

    def get(self, uid: str) -> Dataset:
        reply = self._request(
            f"N-GET {uid}",
            lambda assoc: assoc.send_n_get([], UnifiedProcedureStepPush, uid),
        )
        if reply is None:
            raise ProviderError(f"N-GET {uid} at {self.name}: no attributes returned")
        return reply

    def claim(self, uid: str, transaction_uid: str) -> None:
        self._action(f"claim {uid}", uid, state_change(UpsState.IN_PROGRESS, transaction_uid))

    def update(self, uid: str, transaction_uid: str, changes: Dataset) -> None:
        changes = Dataset(changes)
        changes.TransactionUID = transaction_uid
        self._request(
            f"N-SET {uid}",
            lambda assoc: assoc.send_n_set(changes, UnifiedProcedureStepPush, uid),
        )

    def finish(self, uid: str, transaction_uid: str, state: UpsState) -> None:
        self._action(f"{state.value} {uid}", uid, state_change(state, transaction_uid))

    def _action(self, what: str, uid: str, info: Dataset) -> None:
        self._request(
            what,
            lambda assoc: assoc.send_n_action(
                info, CHANGE_UPS_STATE, UnifiedProcedureStepPush, uid
            ),
        )
