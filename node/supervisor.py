"""Keeps a child process (the node's worker) running, restarting it if it dies."""

from __future__ import annotations

import logging
import os
import subprocess
import threading

log = logging.getLogger(__name__)


class ChildSupervisor:
    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.env = {**os.environ, **env}
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
