"""Per-row baselines over numpy arrays: an exponentially weighted mean/variance and a robust window.

Every class here holds one array row per entity (a GPU ``node/gpu`` or a rank
``job/rank``) and updates many rows in one vectorized call. Rows passed in one call must
be unique: the updates are plain fancy-index assignments, which keep only the last write
for a repeated row. :func:`unique_rounds` splits a batch with repeats into rounds that
are each free of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from trainguard.pipeline.detect.registry import FloatArray, IntArray, RowArrays

__all__ = ["DIFF_TO_SIGMA", "MAD_TO_SIGMA", "Ewm", "EwmLag1", "RobustWindow", "SortedWindow",
           "unique_rounds"]

#: Scales a median absolute deviation to a standard deviation for normal data.
MAD_TO_SIGMA = 1.4826
#: Scales the mean absolute difference of consecutive normal values to a standard
#: deviation: E|x_t - x_(t-1)| = 2σ/√π for independent normal values.
DIFF_TO_SIGMA = 2.0 / math.sqrt(math.pi)

# Rows of a window sorted at a time: a block that stays in a core's L2 cache.
_CHUNK_BYTES = 1 << 19


def unique_rounds(rows: IntArray, ts: FloatArray | None = None) -> list[IntArray]:
    """Split a batch into rounds of unique rows; returns index arrays into the batch.

    The k-th occurrence of a row goes into round k, so applying the rounds in order
    applies each row's points in order: batch order, or event-time order when ``ts`` is
    given (ties keep batch order). A batch without repeats is one round.
    """
    n = len(rows)
    if n == 0:
        return []
    if np.bincount(rows).max() <= 1:
        return [np.arange(n, dtype=np.int64)]
    # Sort by row, then by time within the row: lexsort's last key is the primary one.
    order = np.lexsort((ts, rows)) if ts is not None else np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    occurrence = np.arange(n) - group_start
    return [order[occurrence == k] for k in range(int(occurrence.max()) + 1)]


class Ewm(RowArrays):
    """Exponentially weighted mean and variance per row, with a half-life in samples.

    Until a row has seen about ``1/alpha`` samples the weight of a new sample is
    ``1/(n+1)`` instead of ``alpha``: the estimate is then the plain running mean, so it
    is not pulled toward whatever the first sample was.
    """

    _FIELDS = {"mean": (np.float64, 0.0), "var": (np.float64, 0.0), "n": (np.int64, 0)}
    mean: FloatArray
    var: FloatArray
    n: IntArray

    def __init__(self, capacity: int, half_life: float) -> None:
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0 samples, got {half_life}")
        self.half_life = float(half_life)
        self.alpha = 1.0 - 0.5 ** (1.0 / half_life)
        super().__init__(capacity)

    def update(self, rows: IntArray, x: FloatArray) -> None:
        """Fold one value per row into the estimates; ``rows`` must be unique."""
        n = self.n[rows]
        a = np.maximum(self.alpha, 1.0 / (n + 1))
        mean = self.mean[rows]
        delta = x - mean
        self.mean[rows] = mean + a * delta
        # West's recursion: the variance around the mean as it was before this sample.
        self.var[rows] = (1.0 - a) * (self.var[rows] + a * delta * delta)
        self.n[rows] = n + 1

    def seed(self, rows: IntArray, mean: FloatArray, var: FloatArray, n: IntArray) -> None:
        """Set the estimates of ``rows`` outright, as if learned from ``n`` samples."""
        self.mean[rows] = mean
        self.var[rows] = var
        self.n[rows] = n


class EwmLag1(Ewm):
    """:class:`Ewm` that also tracks the lag-1 autocorrelation of each row's series.

    Telemetry such as temperature or power is autocorrelated: sums of its residuals
    wander more than sums of independent noise, which a change-point test must allow for.
    """

    _FIELDS = {**Ewm._FIELDS, "prev": (np.float64, np.nan), "cov1": (np.float64, 0.0)}
    prev: FloatArray
    cov1: FloatArray

    def update(self, rows: IntArray, x: FloatArray) -> None:
        """Fold one value per row in; ``rows`` must be unique."""
        n, mean, prev = self.n[rows], self.mean[rows], self.prev[rows]
        a = np.maximum(self.alpha, 1.0 / (n + 1))
        lag = (x - mean) * (prev - mean)
        self.cov1[rows] = np.where(np.isnan(prev), self.cov1[rows],
                                   (1.0 - a) * self.cov1[rows] + a * lag)
        self.prev[rows] = x
        super().update(rows, x)

    def seed(self, rows: IntArray, mean: FloatArray, var: FloatArray, n: IntArray) -> None:
        """Set mean and variance outright; the autocorrelation starts again from zero."""
        super().seed(rows, mean, var, n)
        self.cov1[rows], self.prev[rows] = 0.0, np.nan

    def rho(self, rows: IntArray) -> FloatArray:
        """Lag-1 autocorrelation per row (0 where the variance is still 0)."""
        var = self.var[rows]
        return np.divide(self.cov1[rows], var, out=np.zeros(len(rows)), where=var > 0)


class RobustWindow(RowArrays):
    """The last ``size`` values of each row in a ring, giving median and MAD-based scale.

    A median moves by at most one rank per value, so one outlier cannot drag the
    baseline the way it drags a mean. Unfilled slots hold NaN.
    """

    _FIELDS = {"buf": (np.float64, np.nan), "pos": (np.int64, 0), "count": (np.int64, 0)}
    buf: FloatArray
    pos: IntArray
    count: IntArray

    def __init__(self, capacity: int, size: int = 60) -> None:
        if size < 3:
            raise ValueError(f"window size must be >= 3 values, got {size}")
        self.size = int(size)
        self._scratch = np.empty((max(1, _CHUNK_BYTES // (8 * self.size)), self.size))
        super().__init__(capacity)

    def _tail(self, name: str) -> tuple[int, ...]:
        return (self.size,) if name == "buf" else ()

    def _check_values(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
        # A ring position indexes the buffer: out of range, numpy would raise at some later
        # push and compiled code would write past the row. A damaged snapshot stops here.
        for name, high in (("pos", self.size - 1), ("count", self.size)):
            bad = (arrays[name] < 0) | (arrays[name] > high)
            if bad.any():
                raise ValueError(f"state {name!r} holds {int(arrays[name][bad][0])}, "
                                 f"outside 0..{high} for a window of {self.size}")

    def push(self, rows: IntArray, x: FloatArray) -> None:
        """Append one value per row, dropping the oldest once full; ``rows`` must be unique."""
        pos = self.pos[rows]
        self.buf.ravel()[rows * self.size + pos] = x  # flat indices: faster than 2-D
        self.pos[rows] = (pos + 1) % self.size
        self.count[rows] = np.minimum(self.count[rows] + 1, self.size)

    def copy_rows(self, other: RobustWindow, rows: IntArray) -> None:
        """Make ``rows`` hold what ``rows`` of ``other`` (same size) hold."""
        self.buf[rows] = other.buf[rows]
        self.pos[rows] = other.pos[rows]
        self.count[rows] = other.count[rows]

    def stats(self, rows: IntArray) -> tuple[FloatArray, FloatArray, IntArray]:
        """Median, MAD scaled to a standard deviation, and value count for each row.

        Rows with no values get NaN. Sorting puts the NaN of unfilled slots last, so the
        median of a row with ``c`` values sits at ranks ``(c-1)//2`` and ``c//2``.
        """
        count = self.count[rows]
        median, mad = np.empty(len(rows)), np.empty(len(rows))
        # In cache-sized chunks through one scratch block: a fresh (rows, size) copy
        # per call would cost more in page faults than the sorting itself.
        scratch = self._scratch
        for lo in range(0, len(rows), len(scratch)):
            hi = min(lo + len(scratch), len(rows))
            window, c = scratch[: hi - lo], count[lo:hi]
            np.take(self.buf, rows[lo:hi], axis=0, out=window)
            window.sort(axis=1)
            median[lo:hi] = _middle(window, c, self.size)
            # Distances to the median, sorted the same way (NaN still last).
            np.subtract(window, median[lo:hi, None], out=window)
            np.abs(window, out=window)
            window.sort(axis=1)
            mad[lo:hi] = _middle(window, c, self.size)
        return median, MAD_TO_SIGMA * mad, count

    def winsorized_var(
        self, rows: IntArray, center: FloatArray, scale: FloatArray, c: float = 3.0
    ) -> FloatArray:
        """Mean squared distance to ``center``, each capped at ``c * scale``, per row.

        Far more precise than the MAD on a few dozen values, and as bounded: a wild value
        counts as ``c`` scales, however wild.
        """
        d = self.buf[rows] - center[:, None]
        cap = (c * scale)[:, None]
        return np.nanmean(np.minimum(d * d, cap * cap), axis=1)


def _middle(sorted_rows: FloatArray, count: IntArray, size: int) -> FloatArray:
    """Median of each row of a row-sorted array whose first ``count`` entries are values."""
    if len(count) and count.min() == size:
        # Full rows, the steady state: two column reads instead of a fancy gather.
        return 0.5 * (sorted_rows[:, (size - 1) // 2] + sorted_rows[:, size // 2])
    r = np.arange(len(count))
    lo = sorted_rows[r, np.maximum(count - 1, 0) // 2]
    hi = sorted_rows[r, count // 2]
    return np.where(count > 0, 0.5 * (lo + hi), np.nan)


class SortedWindow(RobustWindow):
    """:class:`RobustWindow` that also holds each row's values sorted, for the compiled path.

    The compiled quiet path (:mod:`~trainguard.pipeline.detect.quiet`) reads a row's
    median and MAD from ``sorted`` and keeps it sorted as it learns, instead of sorting the
    row twice per point. ``sorted`` is derived state, in no snapshot: every change to a
    row's ring made here (push, copy, reset, load, growth) marks the row stale
    (``fresh`` False), and the kernel sorts a stale row again before it reads it.
    """

    def __init__(self, capacity: int, size: int = 60) -> None:
        self.sorted: FloatArray = np.empty((0, max(size, 3)))
        self.fresh = np.zeros(0, dtype=np.bool_)
        super().__init__(capacity, size)

    def _reserve(self, capacity: int) -> None:
        """As :meth:`RobustWindow._reserve`; rows not in use are stale."""
        super()._reserve(capacity)
        self._derive(capacity, keep=self.filled)

    def _derive(self, capacity: int, keep: int) -> None:
        """Size the derived arrays to ``capacity`` rows, keeping the first ``keep``."""
        sorted_rows = np.empty((capacity, self.size))  # rows written when first sorted
        sorted_rows[:keep] = self.sorted[:keep]
        fresh = np.zeros(capacity, dtype=np.bool_)
        fresh[:keep] = self.fresh[:keep]
        self.sorted, self.fresh = sorted_rows, fresh

    def reset(self, rows: IntArray) -> None:
        """As :meth:`RobustWindow.reset`; ``rows`` are stale."""
        super().reset(rows)
        self.fresh[rows] = False

    def load_state(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """As :meth:`RobustWindow.load_state`; every row is stale."""
        super().load_state(state)
        self.sorted, self.fresh = np.empty((0, self.size)), np.zeros(0, dtype=np.bool_)
        self._derive(self.capacity, keep=0)

    def load_state_rows(self, rows: IntArray, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """As :meth:`RobustWindow.load_state_rows`; ``rows`` are stale."""
        super().load_state_rows(rows, state)
        self.fresh[rows] = False

    def push(self, rows: IntArray, x: FloatArray) -> None:
        """As :meth:`RobustWindow.push`; ``rows`` are stale (the kernel pushes on its own)."""
        super().push(rows, x)
        self.fresh[rows] = False

    def copy_rows(self, other: RobustWindow, rows: IntArray) -> None:
        """As :meth:`RobustWindow.copy_rows`; ``rows`` are stale."""
        super().copy_rows(other, rows)
        self.fresh[rows] = False
