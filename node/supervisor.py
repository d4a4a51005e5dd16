"""Keeps child processes (the node's two workers) running, restarting each one that
dies, and hands the worker children their settings.

The worker children get the serve process's settings as a file readable by the node's
user alone (``worker-settings.json`` in the data directory), never as environment
variables: a child's environment is readable in ``/proc/<pid>/environ`` and inherited
by whatever it starts, and the settings hold the destinations' credentials and the
database and broker passwords. Their environment is the serve process's without any
``AINODE_*`` variable, so the file is the one source of their settings.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from node.jobs.contracts import GPU_QUEUE, IO_QUEUE
from node.settings import Settings

log = logging.getLogger(__name__)

WORKER_SETTINGS = "worker-settings.json"


class ChildSupervisor:
    """Runs ``command`` with exactly the environment ``env``, restarted when it exits."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            self._process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL)
            log.info("%s started (pid %s)", self.name, self._process.pid)
            code = self._process.wait()
            if self._stop.is_set():
                return
            log.error("%s exited with %s; restarting in %.0f s", self.name, code, backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name=self.name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, grace_seconds: float = 30.0) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()  # Celery's warm shutdown: finish the current task
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)


def write_private_settings(settings: Settings, path: Path, **overrides: object) -> Path:
    """Write ``settings`` (and ``overrides``) as a JSON config file only its owner can
    read, replacing any earlier one in one step; return ``path``."""
    config = {**settings.as_config(), **overrides}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of that name may have had other modes
        with os.fdopen(fd, "w") as file:
            fd = -1
            json.dump(config, file)
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(temporary, path)
    return path


def worker_supervisors(settings: Settings, broker_url: str) -> list[ChildSupervisor]:
    """The supervisors of the node's two worker children, which share one private
    settings file (with the broker the serve process started): the analysis worker
    (``ainode --config FILE worker --queues gpu``, the models warm on its device) and the
    delivery worker (``--queues io``, no model, several deliveries at once), so that an
    archive that does not answer never holds up an analysis."""
    path = write_private_settings(
        settings, settings.data_dir / WORKER_SETTINGS, broker_url=broker_url
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("AINODE_")}
    command = [sys.executable, "-m", "node.cli", "--config", str(path.resolve()), "worker"]
    return [
        ChildSupervisor("analysis worker", [*command, "--queues", GPU_QUEUE], env),
        ChildSupervisor("delivery worker", [*command, "--queues", IO_QUEUE], env),
    ]
