"""UPS-RS against the real app served by uvicorn on a free port (``test_ups_rs*``).

The app is ``tests.web_node``'s (a seeded database, an API token per role) served over
real HTTP, so the WebSocket event channels run in a real server; clients are httpx and
the ``websockets`` package. ``workitem_json`` builds a workitem as a RIS would send it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from node.auth.roles import Role
from tests.browser import uvicorn_thread
from tests.web_node import Node, served_node

DICOM_JSON = "application/dicom+json"
STUDY_UID = "1.2.826.0.1.1"  # the seeded chest CT (tests.web_node)


@dataclass
class ServedRs:
    node: Node
    url: str  # http://127.0.0.1:PORT

    def client(self, role: Role | None = Role.OPERATOR) -> httpx.Client:
        """A client of the DICOMweb root sending ``role``'s API token (None: no token)."""
        headers = {"Authorization": f"Bearer {self.node.tokens[role]}"} if role else {}
        return httpx.Client(base_url=f"{self.url}/dicom-web", headers=headers, timeout=30)

    def channel(self, aetitle: str, role: Role = Role.OPERATOR, **kwargs: Any) -> ClientConnection:
        """The event channel of ``aetitle``, opened with ``role``'s token."""
        ws_url = self.url.replace("http://", "ws://") + f"/dicom-web/subscribers/{aetitle}"
        headers = {"Authorization": f"Bearer {self.node.tokens[role]}", **kwargs}
        return connect(ws_url, additional_headers=headers, open_timeout=10)


@contextmanager
def served_rs(database_url: str, data_dir: Path) -> Iterator[ServedRs]:
    # Events other processes write are looked for every second (the least allowed).
    with (
        served_node(database_url, data_dir, ups_event_poll_seconds=1.0) as node,
        uvicorn_thread(node.app) as url,
    ):
        yield ServedRs(node, url)


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def workitem_json(
    label: str = "Lung nodules",
    priority: str = "MEDIUM",
    worklist: str = "CHEST",
    patient: str = "DOE^JANE",
    patient_id: str = "PID001",
    accession: str = "ACC1",
    study_uid: str = STUDY_UID,
) -> dict[str, Any]:
    """A SCHEDULED workitem naming a study to analyse, as a RIS would create it."""
    return {
        "00100010": element("PN", {"Alphabetic": patient}),
        "00100020": element("LO", patient_id),
        "00100030": element("DA", "19700101"),
        "00100040": element("CS", "F"),
        "00101002": element(
            "SQ", {"00100020": element("LO", "MRN-77"), "00100021": element("LO", "HOSP")}
        ),
        "00404021": element(
            "SQ",
            {
                "0020000D": element("UI", study_uid),
                "0040E020": element("CS", "DICOM"),
            },
        ),
        "0040A370": element(
            "SQ", {"00080050": element("SH", accession), "0020000D": element("UI", study_uid)}
        ),
        "00404018": element(
            "SQ",
            {
                "00080100": element("SH", "lung-nodules"),
                "00080102": element("SH", "99AINODE"),
                "00080104": element("LO", "Lung nodule detection"),
            },
        ),
        "00404041": element("CS", "READY"),
        "00741000": element("CS", "SCHEDULED"),
        "00741200": element("CS", priority),
        "00741202": element("LO", worklist),
        "00741204": element("LO", label),
    }


def value(obj: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON object (None when it has none)."""
    values = obj.get(tag, {}).get("Value") or [None]
    return values[0]


def state_change(state: str, transaction_uid: str) -> list[dict[str, Any]]:
    return [{"00081195": element("UI", transaction_uid), "00741000": element("CS", state)}]


def completion(progress: str = "100") -> list[dict[str, Any]]:
    """An UpdateWorkitem payload that meets the COMPLETED requirements (PS3.4 CC.2.5)."""
    return [
        {
            "00741002": element(
                "SQ",
                {
                    "00741004": element("DS", progress),
                    "00741006": element("ST", "results stored"),
                },
            ),
            "00741216": element(
                "SQ",
                {
                    "00404050": element("DT", "20240301080000"),
                    "00404051": element("DT", "20240301080500"),
                    "00404033": element("SQ"),
                },
            ),
        }
    ]
