"""A real Orthanc, started per test as the hospital's PACS, with automatic routing.

The routing is what a hospital would configure: the Lua ``OnStableStudy`` script in
deploy/orthanc, which forwards each stable study to the node, except what the node
itself sent (no loops).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

ROUTING_LUA = Path(__file__).parents[1] / "deploy" / "orthanc" / "route-to-ainode.lua"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its ports, REST client and log."""

    dicom_port: int
    http_port: int
    directory: Path
    process: subprocess.Popen[bytes]
    aet: str = "ORTHANC"
    auth: tuple[str, str] | None = None  # HTTP basic credentials, when Orthanc wants them

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def get(self, path: str) -> object:
        response = httpx.get(self.url + path, timeout=30, auth=self.auth)
        response.raise_for_status()
        return response.json()

    def file(self, instance_id: str) -> bytes:
        response = httpx.get(f"{self.url}/instances/{instance_id}/file", timeout=30, auth=self.auth)
        response.raise_for_status()
        return response.content

    def instances_by_modality(self) -> dict[str, list[str]]:
        """Instance ids of every series Orthanc holds, grouped by modality."""
        grouped: dict[str, list[str]] = {}
        for series_id in self.get("/series"):  # type: ignore[union-attr]
            series = self.get(f"/series/{series_id}")
            modality = series["MainDicomTags"].get("Modality", "")  # type: ignore[index]
            grouped.setdefault(modality, []).extend(series["Instances"])  # type: ignore[index]
        return grouped

    def store(self, files: list[Path], calling_aet: str = "MODALITY") -> None:
        """Send files into Orthanc with DCMTK's storescu, as a modality would."""
        self.store_to(files, "127.0.0.1", self.dicom_port, self.aet, calling_aet)

    @staticmethod
    def store_to(
        files: list[Path], host: str, port: int, called_aet: str, calling_aet: str = "MODALITY"
    ) -> None:
        """Send files to any Storage SCP with DCMTK's storescu."""
        env = {**os.environ, "TCP_NODELAY": "1"}
        subprocess.run(
            ["storescu", "-R", "-aet", calling_aet, "-aec", called_aet, host, str(port),
             *map(str, files)],
            check=True, env=env, capture_output=True, timeout=300,
        )  # fmt: skip

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.directory.glob("logs/*"))
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in logs[-1:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_orthanc(
    directory: Path,
    *,
    node_port: int | None = None,
    stable_age: int = 2,
    dicom_port: int | None = None,
    user: tuple[str, str] | None = None,
    route: bool = True,
) -> Orthanc:
    """Start Orthanc under ``directory``; with a node port given, route studies to it.

    The routing is the project's own example script (deploy/orthanc), which expects the
    node's AE title to be AINODE. With ``user`` (name, password), its HTTP side (REST
    and DICOMweb) asks for HTTP basic authentication. With ``route=False`` it knows the
    node's address (for a C-MOVE to it) but forwards nothing by itself.
    """
    if shutil.which("Orthanc") is None:
        raise RuntimeError("Orthanc is not installed (tests/peers.sh installs it)")
    if not DICOMWEB_PLUGIN.exists():
        raise RuntimeError("Orthanc's DICOMweb plugin is missing (tests/peers.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    dicom_port, http_port = dicom_port or free_port(), free_port()
    config: dict[str, object] = {
        "Name": "ainode-test-pacs",
        "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": user is not None,
        "RegisteredUsers": dict([user]) if user else {},
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "StableAge": stable_age,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomModalities": {},
    }
    if node_port:
        config["DicomModalities"] = {"AINODE": ["AINODE", "127.0.0.1", node_port]}
        if route:
            config["LuaScripts"] = [str(ROUTING_LUA)]
    config_path = directory / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    process = subprocess.Popen(
        ["Orthanc", f"--logdir={directory / 'logs'}", str(config_path)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    orthanc = Orthanc(dicom_port, http_port, directory, process, auth=user)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}: {orthanc.log_tail()}")
        try:
            if httpx.get(orthanc.url + "/system", timeout=1, auth=user).status_code == 200:
                return orthanc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    orthanc.stop()
    raise RuntimeError("Orthanc did not answer within 30 s")
