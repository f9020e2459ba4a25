"""A log rate limiter for the agent's hot paths: counters are the record, logs say where to look.

A node under attack (one bad datagram after another, a disk that stays full) must not
fill its journal; every event is still counted where it happens, and one line per
interval says how many were not logged since the last one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["LogLimiter"]


class LogLimiter:
    """Allows one log line per ``interval_s``; counts the ones it holds back (thread-safe)."""

    def __init__(
        self, interval_s: float = 10.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._suppressed = 0

    def allow(self) -> int | None:
        """Lines held back since the last allowed one, or ``None`` to hold this one back."""
        now = self._clock()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return None
            self._next = now + self.interval_s
            held, self._suppressed = self._suppressed, 0
            return held
