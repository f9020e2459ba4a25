"""Change-point tests on standardized residuals, per row: two-sided CUSUM and Page-Hinkley.

Both take ``z`` (a residual already divided by a scale, so thresholds are in standard
deviations) and the event time of each point, and answer per row whether the mean of
``z`` has moved up (+1), down (-1) or not (0). A row that alarms starts over, so one
change gives one alarm. Each alarm carries the event time where the excursion that
caused it began (the change-point estimate) and the mean of ``z`` over that excursion,
which tells a sudden step (large mean, few points) from a slow drift (small mean, many).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from trainguard.pipeline.detect.registry import FloatArray, IntArray, RowArrays

__all__ = ["ChangeAlarms", "Cusum", "Direction", "PageHinkley"]

Direction = Literal["both", "up", "down"]


class ChangeAlarms(NamedTuple):
    """What one update found, aligned with the rows passed in."""

    #: +1 mean moved up, -1 moved down, 0 no alarm.
    sign: npt.NDArray[np.int8]
    #: Event time of the first point of the excursion (NaN where no alarm).
    onset: FloatArray
    #: Mean ``z`` over the excursion, in the direction of the alarm (NaN where no alarm).
    mean: FloatArray


def _sides(direction: Direction) -> tuple[bool, bool]:
    if direction not in ("both", "up", "down"):
        raise ValueError(f"unknown direction {direction!r}; expected one of: both, up, down")
    return direction != "down", direction != "up"


_Side = tuple[npt.NDArray[np.bool_], FloatArray, FloatArray]


def _quiet(n: int) -> _Side:
    return np.zeros(n, dtype=bool), np.full(n, np.nan), np.full(n, np.nan)


def _alarms(up: _Side, down: _Side) -> ChangeAlarms:
    """Merge the two sides' (fired, onset, mean) into one answer per row."""
    # Both sides cannot fire on one point in practice; if they do, up wins (arbitrary
    # but fixed, so a replay gives the same answer).
    sign = np.where(up[0], 1, np.where(down[0], -1, 0)).astype(np.int8)
    onset = np.where(up[0], up[1], np.where(down[0], down[1], np.nan))
    mean = np.where(up[0], up[2], np.where(down[0], down[2], np.nan))
    return ChangeAlarms(sign, onset, mean)


class Cusum(RowArrays):
    """Two-sided tabular CUSUM: ``S+ = max(0, S+ + z - k)``, ``S- = max(0, S- - z - k)``.

    Alarms when a side exceeds ``h``. ``k`` is half the shift (in standard deviations)
    the test is tuned to catch fastest; ``h`` sets the false-alarm rate.
    """

    _FIELDS = {
        "up": (np.float64, 0.0),
        "down": (np.float64, 0.0),
        "n_up": (np.int64, 0),
        "n_down": (np.int64, 0),
        "t_up": (np.float64, np.nan),
        "t_down": (np.float64, np.nan),
    }
    up: FloatArray
    down: FloatArray
    n_up: IntArray
    n_down: IntArray
    t_up: FloatArray
    t_down: FloatArray

    def __init__(self, capacity: int, k: float = 0.75, h: float = 10.0,
                 direction: Direction = "both") -> None:
        if not (k >= 0 and h > 0):
            raise ValueError(f"CUSUM needs k >= 0 and h > 0, got k={k}, h={h}")
        self.drift, self.h = float(k), float(h)
        self._up, self._down = _sides(direction)
        super().__init__(capacity)

    def update(self, rows: IntArray, z: FloatArray, ts: FloatArray) -> ChangeAlarms:
        """Fold one ``z`` per (unique) row in; see :class:`ChangeAlarms`."""
        sides = []
        for on, stat, n_all, t_all, sz in (
            (self._up, self.up, self.n_up, self.t_up, z),
            (self._down, self.down, self.n_down, self.t_down, -z),
        ):
            if not on:
                sides.append(_quiet(len(rows)))
                continue
            s = np.maximum(stat[rows] + sz - self.drift, 0.0)
            n = np.where(s > 0, n_all[rows] + 1, 0)
            t = np.where(n == 1, ts, t_all[rows])
            stat[rows], n_all[rows], t_all[rows] = s, n, t
            sides.append((s > self.h, t, s / np.maximum(n, 1) + self.drift))
        alarms = _alarms(sides[0], sides[1])
        self.reset(rows[alarms.sign != 0])
        return alarms

    def pressure(self, rows: IntArray, sign: int) -> FloatArray:
        """How far each row's sum on side ``sign`` (+1 up, -1 down) is toward ``h``."""
        return (self.up if sign > 0 else self.down)[rows] / self.h


class PageHinkley(RowArrays):
    """Page-Hinkley test against the running mean of ``z`` since the row last started.

    ``m+ = sum(z - mean - delta)`` alarms when it rises more than ``lam`` above its
    minimum; ``m- = sum(mean - z - delta)`` does the same for a fall. Unlike CUSUM the
    reference is learned by the test itself, so a constant offset in ``z`` is not a change.
    """

    _FIELDS = {
        "n": (np.int64, 0),
        "avg": (np.float64, 0.0),
        "up": (np.float64, 0.0),
        "up_min": (np.float64, 0.0),
        "down": (np.float64, 0.0),
        "down_min": (np.float64, 0.0),
        "n_up": (np.int64, 0),
        "n_down": (np.int64, 0),
        "t_up": (np.float64, np.nan),
        "t_down": (np.float64, np.nan),
    }
    n: IntArray
    avg: FloatArray
    up: FloatArray
    up_min: FloatArray
    down: FloatArray
    down_min: FloatArray
    n_up: IntArray
    n_down: IntArray
    t_up: FloatArray
    t_down: FloatArray

    def __init__(self, capacity: int, delta: float = 0.75, lam: float = 10.0,
                 direction: Direction = "both") -> None:
        if not (delta >= 0 and lam > 0):
            raise ValueError(f"Page-Hinkley needs delta >= 0 and lam > 0, got {delta}, {lam}")
        self.drift, self.lam = float(delta), float(lam)
        self._up, self._down = _sides(direction)
        super().__init__(capacity)

    def update(self, rows: IntArray, z: FloatArray, ts: FloatArray) -> ChangeAlarms:
        """Fold one ``z`` per (unique) row in; see :class:`ChangeAlarms`."""
        n = self.n[rows] + 1
        avg = self.avg[rows] + (z - self.avg[rows]) / n
        self.n[rows], self.avg[rows] = n, avg
        sides = []
        # Each side sums its deviations in its own direction, so both track a minimum.
        for on, m_all, low_all, n_all, t_all, dev in (
            (self._up, self.up, self.up_min, self.n_up, self.t_up, z - avg),
            (self._down, self.down, self.down_min, self.n_down, self.t_down, avg - z),
        ):
            if not on:
                sides.append(_quiet(len(rows)))
                continue
            m = m_all[rows] + dev - self.drift
            low = np.minimum(low_all[rows], m)
            since = np.where(m <= low, 0, n_all[rows] + 1)
            t = np.where(since == 1, ts, t_all[rows])
            m_all[rows], low_all[rows], n_all[rows], t_all[rows] = m, low, since, t
            rise = m - low
            sides.append((rise > self.lam, t, rise / np.maximum(since, 1) + self.drift))
        alarms = _alarms(sides[0], sides[1])
        self.reset(rows[alarms.sign != 0])
        return alarms

    def pressure(self, rows: IntArray, sign: int) -> FloatArray:
        """How far each row's rise on side ``sign`` (+1 up, -1 down) is toward ``lam``."""
        if sign > 0:
            return (self.up[rows] - self.up_min[rows]) / self.lam
        return (self.down[rows] - self.down_min[rows]) / self.lam
