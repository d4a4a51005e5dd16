"""Another UPS provider over UPS-RS (PS3.18 Chapter 11, the DICOMweb worklist service).

SearchForWorkitems, RetrieveWorkitem, UpdateWorkitem (``?transaction=``) and
ChangeWorkitemState, in the DICOM JSON model (``application/dicom+json``). A 409 on a
claim means another performer was first.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydicom import Dataset

from node.db.worklist import UpsState
from node.performer.provider import (
    RETURN_KEYWORDS,
    RETURN_SEQUENCES,
    Claimed,
    ProviderError,
    state_change,
)

DICOM_JSON = "application/dicom+json"


class RsProvider:
    """A UPS-RS provider at ``root`` (its DICOMweb root, e.g. ``https://ris/dicom-web``)."""

    def __init__(
        self, name: str, root: str, headers: dict[str, str] | None = None, timeout: float = 30.0
    ) -> None:
        self.name = name
        self.root = root.rstrip("/")
        self.headers = {"Accept": DICOM_JSON, **(headers or {})}
        self.timeout = timeout

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
                return client.request(method, f"{self.root}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderError(f"UPS-RS provider {self.name}: {exc}") from exc

    def _check(self, what: str, response: httpx.Response) -> None:
        if response.status_code >= 300:
            detail = response.headers.get("Warning", "") or response.text[:200]
            raise ProviderError(f"{what} at {self.name}: HTTP {response.status_code} {detail}")

    @staticmethod
    def _body(dataset: Dataset) -> bytes:
        return f"[{dataset.to_json()}]".encode()

    def scheduled(self, worklist_label: str) -> list[Dataset]:
        params: dict[str, str] = {"ProcedureStepState": UpsState.SCHEDULED.value}
        if worklist_label:
            params["WorklistLabel"] = worklist_label
        fields = ",".join((*RETURN_KEYWORDS, *RETURN_SEQUENCES))
        response = self._send("GET", "/workitems", params={**params, "includefield": fields})
        if response.status_code == 204:
            return []
        self._check("SearchForWorkitems", response)
        return [Dataset.from_json(item) for item in response.json()]

    def get(self, uid: str) -> Dataset:
        response = self._send("GET", f"/workitems/{uid}")
        self._check(f"RetrieveWorkitem {uid}", response)
        items = response.json()
        if not items:
            raise ProviderError(f"RetrieveWorkitem {uid} at {self.name}: empty answer")
        return Dataset.from_json(items[0])

    def _change_state(self, uid: str, info: Dataset) -> httpx.Response:
        return self._send(
            "PUT",
            f"/workitems/{uid}/state",
            content=self._body(info),
            headers={"Content-Type": DICOM_JSON},
        )

    def claim(self, uid: str, transaction_uid: str) -> None:
        info = state_change(UpsState.IN_PROGRESS, transaction_uid)
        response = self._change_state(uid, info)
        if response.status_code == 409:
            raise Claimed(f"claim {uid} at {self.name}: {response.headers.get('Warning', '')}")
        self._check(f"claim {uid}", response)

    def update(self, uid: str, transaction_uid: str, changes: Dataset) -> None:
        response = self._send(
            "POST",
            f"/workitems/{uid}",
            params={"transaction": transaction_uid},
            content=self._body(changes),
            headers={"Content-Type": DICOM_JSON},
        )
        self._check(f"UpdateWorkitem {uid}", response)

    def finish(self, uid: str, transaction_uid: str, state: UpsState) -> None:
        response = self._change_state(uid, state_change(state, transaction_uid))
        self._check(f"{state.value} {uid}", response)
