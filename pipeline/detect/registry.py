"""Rows: which entity holds which array row, and per-row state stored in such rows.

:class:`EntityRegistry` maps entity keys such as ``"node-17/3"`` (a GPU) or
``"job-42/rank-5"`` (a rank) to rows, handed out lowest-free-first so banks stay compact;
rows of entities silent for longer than an idle timeout (in event time) are freed by
:meth:`EntityRegistry.expire` and reused, after the caller has reset them in its banks.
Keys come from the input, so their number is capped by whoever holds the registry: at the
cap it evicts the least recently seen (:meth:`EntityRegistry.least_recent`).

:class:`RowArrays` is the storage every detector keeps per row: fixed-size arrays that
grow, reset rows, and snapshot all or some rows; :class:`RowGroup` does the same for
several of them at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_ENTITIES", "Arrays", "EntityRegistry", "FloatArray", "IntArray", "RowArrays",
    "RowGroup",
]

#: Entities of one kind a worker keeps baselines for: a 10,000-node cluster's 80,000 GPUs
#: (or ranks), with 60 % headroom; at ~6.5 KB per rank entity, under 1 GB.
DEFAULT_MAX_ENTITIES = 131_072

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: A snapshot: named arrays, as ``numpy.savez`` writes them.
Arrays = dict[str, np.ndarray[Any, Any]]


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
        out = self.assign(keys)
        self.touch(out, ts)
        return out

    def assign(self, keys: Sequence[str]) -> IntArray:
        """The row of each key, assigning rows to new keys in order; last seen untouched."""
        row_of = self._row_of
        return np.fromiter(
            (row if (row := row_of.get(key)) is not None else self._assign(key)
             for key in keys), dtype=np.int64, count=len(keys))

    def touch(self, rows: IntArray, ts: FloatArray) -> None:
        """Record ``ts`` as last seen for ``rows`` (one time per row; a row may repeat).

        Last-seen times only move forward, and a NaN time is ignored.
        """
        np.fmax.at(self._last_seen, rows, ts)

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

    def least_recent(self, n: int, spare: Sequence[str] = ()) -> IntArray:
        """Rows of the ``n`` entities seen least recently (event time), sparing ``spare``.

        Ties go to the lower row. Fewer than ``n`` when fewer are held outside ``spare``.
        """
        if n <= 0 or not self._row_of:
            return np.zeros(0, dtype=np.int64)
        seen = self._last_seen[: self.n_rows].copy()
        seen[np.isnan(seen)] = np.inf  # free rows are never picked
        kept = [row for k in spare if (row := self._row_of.get(k)) is not None]
        seen[np.asarray(kept, dtype=np.int64)] = np.inf
        order = np.argsort(seen, kind="stable")[:n]
        return order[seen[order] < np.inf].astype(np.int64, copy=False)

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


class RowArrays:
    """Per-row state in fixed-size arrays, with the capacity and snapshot plumbing.

    A subclass lists its arrays in ``_FIELDS`` (name -> dtype, fill value) and may give
    them a trailing shape through :meth:`_tail`. Growing, resetting rows, snapshots of
    all rows or of some rows are then the same for every kind of state.
    """

    _FIELDS: ClassVar[Mapping[str, tuple[type, float]]] = {}

    def __init__(self, capacity: int) -> None:
        self.capacity = 0
        #: Rows ``0 .. filled-1`` hold state; the rest of the capacity is not written yet.
        self.filled = 0
        self._arrays: Arrays = {}
        for name, (dtype, _) in self._FIELDS.items():
            self._arrays[name] = np.empty((0, *self._tail(name)), dtype)
        self._reserve(max(capacity, 1))  # exactly: a caller that names it knows its rows
        self.grow(self.capacity)

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the per-row arrays, as keyed in :meth:`state`."""
        return tuple(self._FIELDS)

    def _tail(self, name: str) -> tuple[int, ...]:
        """Trailing shape of one row of field ``name``: scalar unless overridden."""
        return ()

    def _bind(self) -> None:
        # Attribute access (self.mean) keeps the hot paths readable and fast.
        for name, array in self._arrays.items():
            setattr(self, name, array)

    def grow(self, n_rows: int) -> None:
        """Make rows ``0 .. n_rows-1`` hold state (empty for new ones); call before using them.

        Capacity grows to twice what is asked (or twice itself, if more), but only rows in
        use are ever written: the rest of a new array is memory the kernel has not handed
        over yet. A fleet's first tick brings tens of thousands of entities at once, in two
        or more batches: filling whole doubled arrays with their empty state cost more than
        judging the tick, and growing only to the first batch's rows made the second batch
        copy them all into the next arrays (BENCHMARKS.md, round 16).
        """
        if n_rows > self.capacity:
            self._reserve(max(2 * n_rows, 2 * self.capacity))
        if n_rows > self.filled:
            for name, (_, fill) in self._FIELDS.items():
                self._arrays[name][self.filled : n_rows] = fill
            self.filled = n_rows

    def _reserve(self, capacity: int) -> None:
        """Make the arrays ``capacity`` rows long, keeping the rows in use (none written)."""
        for name, (dtype, _) in self._FIELDS.items():
            new: np.ndarray[Any, Any] = np.empty((capacity, *self._tail(name)), dtype)
            new[: self.filled] = self._arrays[name][: self.filled]
            self._arrays[name] = new
        self.capacity = capacity
        self._bind()

    def reset(self, rows: IntArray) -> None:
        """Return ``rows`` (in use: see :meth:`grow`) to their empty state, as for a new entity."""
        for name, (_, fill) in self._FIELDS.items():
            self._arrays[name][rows] = fill

    def state(self) -> Arrays:
        """A copy of every row in use, for a snapshot."""
        return {name: array[: self.filled].copy() for name, array in self._arrays.items()}

    def load_state(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Replace all rows with a :meth:`state` snapshot (same field layout)."""
        arrays = {name: self._checked(name, state) for name in self._FIELDS}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"state arrays disagree on the row count: {sorted(lengths)}")
        self._check_values(arrays)
        self._arrays = {name: a.copy() for name, a in arrays.items()}
        self.capacity = self.filled = lengths.pop()
        self._bind()

    def state_rows(self, rows: IntArray) -> Arrays:
        """A copy of ``rows`` of every array, in the order of ``rows``."""
        return {name: array[rows] for name, array in self._arrays.items()}

    def load_state_rows(self, rows: IntArray, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Write a :meth:`state_rows` snapshot into ``rows`` (growing as needed)."""
        arrays = {name: self._checked(name, state) for name in self._FIELDS}
        for name, array in arrays.items():
            if len(array) != len(rows):
                raise ValueError(f"state {name!r} has {len(array)} rows, expected {len(rows)}")
        self._check_values(arrays)
        if len(rows):
            self.grow(int(rows.max()) + 1)
        for name, array in arrays.items():
            self._arrays[name][rows] = array

    def _check_values(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Raise ValueError for values out of their range (a subclass's indices, counts)."""

    def _checked(
        self, name: str, state: Mapping[str, np.ndarray[Any, Any]]
    ) -> np.ndarray[Any, Any]:
        if name not in state:
            raise ValueError(f"state lacks {name!r}; expected keys: {', '.join(self._FIELDS)}")
        array = np.asarray(state[name])
        dtype, _ = self._FIELDS[name]
        if array.dtype != np.dtype(dtype) or array.shape[1:] != self._tail(name):
            raise ValueError(
                f"state {name!r} is {array.dtype}{list(array.shape[1:])}, "
                f"expected {np.dtype(dtype)}{list(self._tail(name))}"
            )
        return array


class RowGroup:
    """Named :class:`RowArrays` that grow, reset and snapshot together, as ``name.field``."""

    def __init__(self, parts: Mapping[str, RowArrays], state_format: int) -> None:
        self._parts = dict(parts)
        self._format = state_format

    @property
    def capacity(self) -> int:
        """Rows held without growing."""
        return min(part.capacity for part in self._parts.values())

    def grow(self, n_rows: int) -> None:
        """Make room for rows ``0 .. n_rows-1`` (to twice as many, or twice the capacity)."""
        for part in self._parts.values():
            part.grow(n_rows)

    def reset_rows(self, rows: IntArray) -> None:
        """Forget ``rows``, e.g. rows a registry expired and will hand to new entities."""
        for part in self._parts.values():
            part.reset(np.asarray(rows, dtype=np.int64))

    def state(self) -> Arrays:
        """Every array of every row (copies): a snapshot :meth:`load_state` restores exactly."""
        out: Arrays = {"meta.format": np.array(self._format)}
        for prefix, part in self._parts.items():
            out.update({f"{prefix}.{k}": v for k, v in part.state().items()})
        return out

    def load_state(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Replace every row with a :meth:`state` snapshot of the same layout."""
        fmt = int(state.get("meta.format", -1))
        if fmt != self._format:
            raise ValueError(f"snapshot format {fmt}, expected {self._format}")
        self._check_keys(state, {"meta.format"})
        for prefix, part in self._parts.items():
            part.load_state(_under(state, prefix))

    def state_rows(self, rows: IntArray) -> Arrays:
        """``rows`` of every array, in the order given: what moves with a partition."""
        rows = np.asarray(rows, dtype=np.int64)
        out: Arrays = {}
        for prefix, part in self._parts.items():
            out.update({f"{prefix}.{k}": v for k, v in part.state_rows(rows).items()})
        return out

    def load_state_rows(self, rows: IntArray, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Write a :meth:`state_rows` snapshot into ``rows`` (which may differ from its source)."""
        self._check_keys(state, set())
        rows = np.asarray(rows, dtype=np.int64)
        for prefix, part in self._parts.items():
            part.load_state_rows(rows, _under(state, prefix))

    def _check_keys(self, state: Mapping[str, Any], meta: set[str]) -> None:
        # Parts check their own arrays; this catches arrays no part would read, as in a
        # snapshot of a bank with another change-point test.
        expected = meta | {f"{p}.{k}" for p, part in self._parts.items() for k in part.fields}
        if set(state) != expected:
            raise ValueError(
                f"snapshot does not fit: missing {sorted(expected - set(state))}, "
                f"unexpected {sorted(set(state) - expected)}"
            )


def _under(state: Mapping[str, np.ndarray[Any, Any]], prefix: str) -> Arrays:
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
