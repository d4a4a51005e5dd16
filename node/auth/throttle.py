"""Failed local sign-ins counted per account name and per client address.

After ``max_failures`` failed sign-ins for one name, or from one address, within
``window_seconds`` (counted from the first of them), that name or address is refused
until the window has passed: the sign-in route then answers 429 with ``Retry-After``
and checks no password at all, so a guesser learns nothing, not even from timing. A
success clears the name's count (never the address's: one right password must not
buy a guesser from the same address more tries).

The counts live in memory, in one web process, and are bounded: past ``max_keys``
names and addresses the oldest is forgotten, so a flood of made-up names cannot grow
the process without end.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]  # seconds, monotonic


@dataclass
class _Count:
    first: float  # when the window of this key began (the first failure in it)
    failures: int


class SigninThrottle:
    """Counts failed sign-ins per ``name:`` and ``address:`` key (module docstring)."""

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        max_keys: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_seconds <= 0 or max_keys < 2:
            raise ValueError("max_failures >= 1, window_seconds > 0 and max_keys >= 2")
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._counts: OrderedDict[str, _Count] = OrderedDict()
        self._lock = threading.Lock()  # sync routes run in a thread pool

    @staticmethod
    def _keys(name: str, address: str) -> list[str]:
        keys = [f"name:{name.casefold()}"]
        if address:
            keys.append(f"address:{address}")
        return keys

    def _live(self, key: str, now: float) -> _Count | None:
        count = self._counts.get(key)
        if count is not None and now - count.first >= self.window_seconds:
            del self._counts[key]
            return None
        return count

    def retry_after(self, name: str, address: str) -> int | None:
        """Whole seconds until ``name`` from ``address`` may try again; None: now."""
        now = self._clock()
        waits = []
        with self._lock:
            for key in self._keys(name, address):
                count = self._live(key, now)
                if count is not None and count.failures >= self.max_failures:
                    waits.append(count.first + self.window_seconds - now)
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def failed(self, name: str, address: str) -> None:
        """Count one failed sign-in of ``name`` from ``address``."""
        now = self._clock()
        with self._lock:
            for key in self._keys(name, address):
                count = self._live(key, now)
                if count is None:
                    self._counts[key] = _Count(first=now, failures=1)
                else:
                    count.failures += 1
                    self._counts.move_to_end(key)
            while len(self._counts) > self.max_keys:
                self._counts.popitem(last=False)  # the least recently failed

    def succeeded(self, name: str) -> None:
        """``name`` signed in: its failures no longer count."""
        with self._lock:
            self._counts.pop(self._keys(name, "")[0], None)

    def __len__(self) -> int:
        return len(self._counts)
