"""Per-key event clocks that data can advance only for its own key, and the wall clock after.

Every job has its own event time. :class:`EventClocks` keeps, per key (a job), the newest
event time seen and the wall-clock moment it was seen; the key's *now* is that event time
plus the wall-clock time elapsed since. So a replayed or accelerated stream runs on its
own (faster) clock while its records flow, a job whose records stopped still moves on at
wall-clock speed (open steps close, alerts expire), and one job's records can never move
another job's time: a record with a far-future ``ts`` changes nothing outside its job
(and the ingest window already dead-letters it, reason ``clock``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

__all__ = ["EventClocks"]


class EventClocks:
    """Event time per key, extrapolated at wall-clock speed once its data stops.

    ``clock`` is the wall clock (injected for tests); ``max_keys`` bounds memory, the key
    advanced longest ago is forgotten first.
    """

    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = 65536) -> None:
        self._clock = clock
        self._max_keys = max_keys
        #: key → (newest event time, wall time it was seen).
        self._seen: dict[str, tuple[float, float]] = {}
        #: key → the newest event time its data carried (what counts as news).
        self._newest: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._seen))

    def advance(self, key: str, ts: float) -> None:
        """``key``'s data reached event time ``ts`` (older times change nothing)."""
        if not math.isfinite(ts):
            return
        seen = self._seen.get(key)
        if seen is not None and ts <= self._newest[key]:
            return
        self._newest[key] = ts
        # Newer data: the key is alive now; its time never goes back.
        at = ts if seen is None else max(ts, self._at(seen))
        self._seen.pop(key, None)  # most recently advanced last, for eviction
        self._seen[key] = (at, self._clock())
        while len(self._seen) > self._max_keys:
            self.forget(next(iter(self._seen)))

    def now(self, key: str) -> float:
        """``key``'s event time now; ``-inf`` for a key never seen."""
        seen = self._seen.get(key)
        return -math.inf if seen is None else self._at(seen)

    def newest(self, key: str) -> float:
        """The newest event time ``key``'s data carried; ``-inf`` for a key never seen."""
        return self._newest.get(key, -math.inf)

    def idle_for(self, key: str) -> float:
        """Wall-clock seconds since ``key``'s data last carried a newer time (``inf``: never)."""
        seen = self._seen.get(key)
        return math.inf if seen is None else max(0.0, self._clock() - seen[1])

    def saved(self, key: str) -> float | None:
        """The newest event time ``key``'s data carried, to hand it to another worker."""
        return self._newest.get(key)

    def restore(self, key: str, newest: float) -> None:
        """Take ``key`` over from another worker (see :meth:`saved`).

        Its time goes on from its newest data's, at wall-clock speed from now: the time
        the hand-off took (a session timeout, a backlog to read) is not its silence.
        """
        if not math.isfinite(newest) or self.newest(key) >= newest:
            return  # this worker already saw it as far
        self._seen.pop(key, None)
        self._seen[key] = (newest, self._clock())
        self._newest[key] = newest
        while len(self._seen) > self._max_keys:
            self.forget(next(iter(self._seen)))

    def forget(self, key: str) -> None:
        """Drop ``key`` (its job was forgotten)."""
        self._seen.pop(key, None)
        self._newest.pop(key, None)

    def _at(self, seen: tuple[float, float]) -> float:
        ts, wall = seen
        return ts + max(0.0, self._clock() - wall)
