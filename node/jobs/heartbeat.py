"""A running job's heartbeat: proof, renewed in the database, that its worker lives.

The reconciler runs a RUNNING job again once its heartbeat is older than
AINODE_LOST_WORKER_SECONDS (its worker was killed, or its machine lost), without
waiting for the broker's visibility timeout, which must outlast the longest job.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from node.jobs.ledger import JobLedger

log = logging.getLogger(__name__)


class JobHeartbeat:
    """Renews ``job_id``'s heartbeat every ``interval`` seconds while in its ``with``."""

    def __init__(self, ledger: JobLedger, job_id: int, interval: float) -> None:
        self.ledger = ledger
        self.job_id = job_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.ledger.beat(self.job_id)
            except Exception:  # noqa: BLE001 - a passing DB fault; the next beat retries
                log.warning("job %s: heartbeat not recorded", self.job_id, exc_info=True)

    def __enter__(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
