"""The node under test as a real process: ``ainode serve`` with its own ports and data.

Before its first start the node gets an admin API token (``ainode tokens create``, which
also migrates its database); ``get`` and ``post`` send it, as a script would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.orthanc import free_port


@dataclass
class NodeProcess:
    data_dir: Path
    dicom_port: int
    http_port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    token: str = ""  # an admin's API token, made before the first start
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "node.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _create_token(self) -> str:
        made = subprocess.run(
            [sys.executable, "-m", "node.cli", "tokens", "create", "--role", "admin"],
            env={**self.env, "AINODE_LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if made.returncode != 0:
            raise RuntimeError(f"ainode tokens create failed:\n{made.stderr}")
        return made.stdout.strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 120) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.token:
            self.token = self._create_token()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"node not healthy within {timeout} s:\n{self.log()}")

    def get(self, path: str) -> object:
        response = httpx.get(self.url + path, headers=self.headers, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, json: object = None) -> httpx.Response:
        """POST with the admin token; the response as it came (the caller checks it)."""
        return httpx.post(self.url + path, json=json, headers=self.headers, timeout=30)

    def log(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def node_environment(data_dir: Path, **settings: str) -> tuple[dict[str, str], int, int]:
    dicom_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINODE_")}
    env.update(
        {
            "AINODE_DATA_DIR": str(data_dir),
            "AINODE_DICOM_PORT": str(dicom_port),
            "AINODE_DICOM_BIND": "127.0.0.1",
            "AINODE_HTTP_PORT": str(http_port),
            "AINODE_UPS_PORT": str(free_port()),  # the UPS SCP's own (node.ups)
            "AINODE_STABLE_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"AINODE_{k.upper()}": v for k, v in settings.items()})
    return env, dicom_port, http_port


def start_node(data_dir: Path, dicom_port: int | None = None, **settings: str) -> NodeProcess:
    """``ainode serve`` under ``data_dir`` on its own ports (``dicom_port`` when the
    test must know it beforehand), started and healthy."""
    env, port, http_port = node_environment(data_dir, **settings)
    if dicom_port is not None:
        env["AINODE_DICOM_PORT"], port = str(dicom_port), dicom_port
    node = NodeProcess(data_dir, port, http_port, env)
    node.start()
    return node


def wait_for(condition, timeout: float, interval: float = 0.5, what: str = "condition"):  # noqa: ANN001, ANN201
    """Poll ``condition`` until it returns something truthy; return it, or fail naming it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
