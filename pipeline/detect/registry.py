"""Entity keys to array rows: which row of every detector bank belongs to which GPU or rank.

Keys are strings such as ``"node-17/3"`` (a GPU) or ``"job-42/rank-5"`` (a rank). Rows
are handed out lowest-free-first, so banks stay compact; rows of entities silent for
longer than an idle timeout (in event time) are freed by :meth:`EntityRegistry.expire`
and reused, after the caller has reset them in its banks.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.detect.baseline import FloatArray, IntArray

__all__ = ["EntityRegistry"]


class EntityRegistry:
    """Maps entity keys to row ints and remembers when each row was last seen."""

    def __init__(self) -> None:
        self._row_of: dict[str, int] = {}
        self._keys: list[str] = []  # row -> key; "" for a free row
        self._free: list[int] = []  # min-heap of free rows below len(self._keys)
        # NaN marks a free row; -inf a row whose points have had no finite time yet.
        self._last_seen: FloatArray = np.zeros(0)

    def __len__(self) -> int:
        """Entities currently holding a row."""
        return len(self._row_of)

    @property
    def n_rows(self) -> int:
        """Rows ever handed out (the high-water mark): banks need at least this capacity."""
        return len(self._keys)

    def get(self, key: str) -> int | None:
        """The row of ``key``, or None if it has none."""
        return self._row_of.get(key)

    def rows_for(self, keys: Sequence[str], ts: FloatArray) -> IntArray:
        """The row of each key, assigning rows to new keys; records ``ts`` as last seen.

        ``ts`` is the event time of each key's point (one per key). Last-seen times only
        move forward, so a late point does not make an entity look newer than it is.
        """
        ts = np.asarray(ts, dtype=np.float64)
        if len(ts) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(ts)} timestamps")
        out = np.empty(len(keys), dtype=np.int64)
        row_of = self._row_of
        for i, key in enumerate(keys):
            row = row_of.get(key)
            out[i] = self._assign(key) if row is None else row
        np.fmax.at(self._last_seen, out, ts)  # fmax: a NaN time is ignored
        return out

    def _assign(self, key: str) -> int:
        if not key:
            raise ValueError("entity key is empty; expected e.g. 'node/gpu' or 'job/rank'")
        if self._free:
            row = heapq.heappop(self._free)
            self._keys[row] = key
        else:
            row = len(self._keys)
            self._keys.append(key)
            if row >= len(self._last_seen):
                grown = np.full(max(16, 2 * len(self._last_seen)), np.nan)
                grown[: len(self._last_seen)] = self._last_seen
                self._last_seen = grown
        self._last_seen[row] = -np.inf
        self._row_of[key] = row
        return row

    def last_seen(self, rows: IntArray) -> FloatArray:
        """Event time each row was last seen (NaN for a free row)."""
        return self._last_seen[np.asarray(rows, dtype=np.int64)]

    def keys_of(self, rows: IntArray | Sequence[int]) -> list[str]:
        """The key holding each row."""
        out = []
        for row in np.asarray(rows, dtype=np.int64).tolist():
            key = self._keys[row] if 0 <= row < len(self._keys) else ""
            if not key:
                raise KeyError(f"row {row} is not assigned to an entity")
            out.append(key)
        return out

    def release(self, rows: IntArray | Sequence[int]) -> None:
        """Free ``rows`` for reuse (an entity known to be gone, e.g. a finished job)."""
        for row in np.asarray(rows, dtype=np.int64).tolist():
            key = self._keys[row]
            if key:
                del self._row_of[key]
                self._keys[row] = ""
                self._last_seen[row] = np.nan
                heapq.heappush(self._free, row)

    def expire(self, now_ts: float, idle_s: float) -> list[int]:
        """Free and return the rows of entities not seen for more than ``idle_s``.

        ``now_ts`` is event time (e.g. the newest timestamp the worker has seen), never
        the wall clock, so replaying old data expires the same rows as the live run did.
        The caller resets the returned rows in its banks before they are reused.
        """
        idle = self._last_seen[: self.n_rows] < now_ts - idle_s  # False for free (NaN)
        rows = np.flatnonzero(idle).tolist()
        self.release(rows)
        return rows

    def state(self) -> dict[str, np.ndarray[Any, Any]]:
        """Keys and last-seen times per row, for a snapshot."""
        return {
            "keys": np.array(self._keys, dtype=np.str_),
            "last_seen": self._last_seen[: self.n_rows].copy(),
        }

    def load_state(self, state: dict[str, np.ndarray[Any, Any]]) -> None:
        """Restore a :meth:`state` snapshot; free rows are rebuilt from the empty keys."""
        keys = [str(k) for k in np.asarray(state["keys"]).tolist()]
        last_seen = np.asarray(state["last_seen"], dtype=np.float64)
        if len(keys) != len(last_seen):
            raise ValueError(f"{len(keys)} keys but {len(last_seen)} last-seen times")
        self._keys = keys
        self._row_of = {k: row for row, k in enumerate(keys) if k}
        if len(self._row_of) != sum(1 for k in keys if k):
            raise ValueError("snapshot maps one key to more than one row")
        self._free = [row for row, k in enumerate(keys) if not k]
        heapq.heapify(self._free)
        self._last_seen = np.full(max(16, len(keys)), np.nan)
        self._last_seen[: len(keys)] = last_seen
