"""The UPS event dispatcher: sends pending events to DIMSE subscribers (UPS Event SOP
Class, N-EVENT-REPORT as SCU on an association the node opens).

One thread decides, a small pool sends: each subscriber's events go in order, on one
association per pass, in a task of their own, so a subscriber that is down (each try
waiting for a connect or association timeout) holds up only its own events. It is
tried again after a backoff that doubles up to ``AINODE_UPS_EVENT_RETRY_MAX_SECONDS``;
its events stay pending (attempts and the last error on each row) until it answers.

The thread sleeps until the book wakes it (a request of the node's own committed) or,
for events the workers' processes wrote, until ``AINODE_UPS_EVENT_POLL_SECONDS``
passed (at least a second): it never busy-polls. Subscribers named ``web:...`` are
UPS-RS's, sent by its notifications (``WatchBook.take_pending``): left alone here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pynetdicom import AE

from node.delivery.destinations import DicomAddress
from node.ups.attributes import UPS_EVENT, UPS_PUSH
from node.ups.watch import PendingEvent, WatchBook

log = logging.getLogger(__name__)

WEB_PREFIX = "web:"
BATCH = 500  # events read per pass


@dataclass
class _Backoff:
    failures: int = 0
    due: float = 0.0  # time.monotonic() before which the subscriber is not tried


@dataclass(frozen=True)
class SendTimeouts:
    acse: float = 10.0
    dimse: float = 30.0
    network: float = 30.0


class EventDispatcher:
    """Sends the book's pending events to each subscriber's configured address."""

    def __init__(
        self,
        book: WatchBook,
        receivers: Mapping[str, DicomAddress],
        ae_title: str,
        retry_seconds: float = 5.0,
        retry_max_seconds: float = 300.0,
        poll_seconds: float = 5.0,
        timeouts: SendTimeouts = SendTimeouts(),
        senders: int = 4,
    ) -> None:
        self.book = book
        self.receivers = dict(receivers)
        self.ae_title = ae_title
        self.retry_seconds = retry_seconds
        self.retry_max_seconds = retry_max_seconds
        self.poll_seconds = max(poll_seconds, 1.0)
        self.timeouts = timeouts
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="ups-event")
        self._busy: dict[str, Future[None]] = {}
        self._backoff: dict[str, _Backoff] = defaultdict(_Backoff)
        self._lock = threading.Lock()

    def wake(self) -> None:
        """Something was committed that may have written events: look now."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ups-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self.dispatch()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the thread
                log.exception("UPS event dispatch failed; trying again")
                wait = self.poll_seconds
            self._wake.wait(wait)

    def dispatch(self) -> float:
        """One pass: hand each due subscriber's pending events to a sender; the seconds
        until the next subscriber is due (at most the poll interval)."""
        events = self.book.pending_events(exclude_prefix=WEB_PREFIX, limit=BATCH)
        by_subscriber: dict[str, list[PendingEvent]] = defaultdict(list)
        for event in events:
            by_subscriber[event.subscriber].append(event)
        now = time.monotonic()
        wait = self.poll_seconds
        with self._lock:
            for subscriber, pending in by_subscriber.items():
                backoff = self._backoff[subscriber]
                if subscriber in self._busy or backoff.due > now:
                    if backoff.due > now:
                        wait = min(wait, backoff.due - now)
                    continue
                self._busy[subscriber] = self._pool.submit(self._send_all, subscriber, pending)
        return max(wait, 0.05)

    def _send_all(self, subscriber: str, events: list[PendingEvent]) -> None:
        sent: list[int] = []
        try:
            address = self.receivers.get(subscriber)
            if address is None:
                raise ConnectionError(f"no address for {subscriber} (AINODE_UPS_EVENT_RECEIVERS)")
            self._send(address, events, sent)
        except Exception as error:  # noqa: BLE001 - any failure means "try again later"
            self._failed(subscriber, [e for e in events if e.id not in sent], error)
        else:
            with self._lock:
                self._backoff.pop(subscriber, None)
        finally:
            with self._lock:
                self._busy.pop(subscriber, None)
            self._wake.set()  # more may be waiting for this subscriber

    def _send(self, address: DicomAddress, events: list[PendingEvent], sent: list[int]) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = self.timeouts.acse
        ae.dimse_timeout = self.timeouts.dimse
        ae.network_timeout = self.timeouts.network
        ae.add_requested_context(UPS_EVENT)
        assoc = ae.associate(address.host, address.port, ae_title=address.ae_title)
        if not assoc.is_established:
            raise ConnectionError(f"association with {address} refused or failed")
        try:
            for event in events:
                if "SpecificCharacterSet" not in event.info:  # a reason may be in any script
                    event.info.SpecificCharacterSet = "ISO_IR 192"
                status = assoc.send_n_event_report(
                    event.info, event.event_type, UPS_PUSH, event.workitem_uid
                )[0]
                code = getattr(status, "Status", None)
                if code is None or (code != 0x0000 and code >> 12 != 0xB):  # success, warning
                    raise ConnectionError(f"N-EVENT-REPORT to {address} answered {code!r}")
                self.book.mark_sent([event.id])
                sent.append(event.id)
        finally:
            if assoc.is_established:
                assoc.release()

    def _failed(self, subscriber: str, unsent: list[PendingEvent], error: Exception) -> None:
        with self._lock:
            backoff = self._backoff[subscriber]
            backoff.failures += 1
            delay = min(self.retry_seconds * 2 ** (backoff.failures - 1), self.retry_max_seconds)
            backoff.due = time.monotonic() + delay
        log.warning("UPS events to %s not sent (%s); again in %.0f s", subscriber, error, delay)
        if unsent:  # the first one not sent is the one that failed
            self.book.mark_failed(unsent[0].id, str(error))
