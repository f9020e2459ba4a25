"""Robust statistics across a step's ranks, and compact per-rank histories.

* :func:`row_medians`: the median of each row of a metrics x ranks matrix, NaN ignored
  (one sort for every metric).
* :func:`group_medians`: the median of one metric within each replica group, vectorized
  over all groups with one sort.
* :func:`push_bits` / :func:`popcount`: the last ``n <= 64`` verdicts of each rank as the
  bits of one ``uint64``, so "k of the last n steps" costs two array operations.
* :class:`CalibratedCusum`: per-rank CUSUMs of clipped z-scores, standardized by the null
  (mean and variance of the clipped scores) learned from the job's own ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainguard.pipeline.consistency.columns import FloatArray, IntArray
from trainguard.pipeline.detect.baseline import MAD_TO_SIGMA

__all__ = [
    "MAD_TO_SIGMA", "CalibratedCusum", "UIntArray", "group_medians", "popcount", "push_bits",
    "row_medians",
]

UIntArray = np.ndarray[Any, np.dtype[np.uint64]]


def row_medians(values: FloatArray, *, min_peers: int) -> FloatArray:
    """Median of each row's finite values; NaN for a row with fewer than ``min_peers``."""
    rows, n = values.shape
    if n == 0:
        return np.full(rows, math.nan)
    finite = np.isfinite(values)
    if n >= min_peers and finite.all():
        return _full_medians(values)
    counts = finite.sum(axis=1)
    full = counts == n
    if n >= min_peers and (full | (counts == 0)).all():
        # Whole rows reported or not at all (a metric the trainer does not send): the
        # empty rows are NaN, the full ones a partial sort; nothing to sort around NaN.
        med = np.full(rows, math.nan)
        if full.any():
            med[full] = _full_medians(values[full])
        return med
    ordered = np.sort(values, axis=1)  # NaN sorts last
    at = np.arange(rows)
    # counts <= n, so both indices stay within the row.
    med = 0.5 * (ordered[at, np.maximum((counts - 1) // 2, 0)] + ordered[at, counts // 2])
    med[counts < min_peers] = math.nan
    return med


def _full_medians(values: FloatArray) -> FloatArray:
    """Median of each row of a matrix with only finite values (one partial sort)."""
    n = values.shape[1]
    # The two middle values of each row: the same order statistics a full sort gives.
    lo, hi = (n - 1) // 2, n // 2
    middle = np.partition(values, (lo, hi), axis=1)
    return 0.5 * (middle[:, lo] + middle[:, hi])


def group_medians(
    values: FloatArray, group: IntArray, n_groups: int, *, min_peers: int
) -> FloatArray:
    """Per rank: the median of its replica group's finite values (NaN: group too small)."""
    finite = np.isfinite(values)
    g = group[finite]
    x = values[finite]
    counts = np.bincount(g, minlength=n_groups)
    if len(x) == 0:
        return np.full(len(values), math.nan)
    order = np.lexsort((x, g))
    xs = x[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    last = len(xs) - 1
    lo = np.minimum(starts + np.maximum(counts - 1, 0) // 2, last)
    hi = np.minimum(starts + counts // 2, last)
    med = (xs[lo] + xs[hi]) / 2.0
    med[counts < min_peers] = math.nan
    return med[group]


def push_bits(
    hist: UIntArray, rows: IntArray | slice, ok: np.ndarray[Any, Any], bits: np.ndarray[Any, Any],
    n: int,
) -> IntArray:
    """Shift one verdict into ``hist[rows]`` where ``ok`` (keeping ``n`` bits); count them."""
    mask = np.uint64((1 << n) - 1) if n < 64 else np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    old = hist[rows]
    new = np.where(ok, ((old << np.uint64(1)) | bits.astype(np.uint64)) & mask, old)
    hist[rows] = new
    return popcount(new)


def popcount(h: UIntArray) -> IntArray:
    """Set bits of each ``uint64``."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(h).astype(np.int64)
    bits = np.unpackbits(np.ascontiguousarray(h).view(np.uint8).reshape(-1, 8), axis=1)
    return bits.sum(axis=1).astype(np.int64)


class CalibratedCusum:
    """Two-sided CUSUMs per metric (rows) and rank slot (columns), calibrated to the job.

    Each step a rank's robust z against its peers (clipped at ``clip``) is standardized by
    the job's own null: per rank, the running mean and variance of its clipped z (a moving
    average over ``null_span`` steps), and across the step's ranks the *median* of those, so
    a minority of faulty ranks cannot move the null. Skewed noise (step times have a long
    right tail) gives clipped z a positive mean that a plain CUSUM would accumulate; the
    learned mean removes it, and the learned variance makes the threshold mean the same
    false-alarm rate for 4 ranks (whose MAD underestimates the spread) as for 4,000. The
    standardized score ``u`` is clipped again, so one step adds at most ``clip - k``.

    ``k`` (the allowance, per metric) is what a step's score must exceed to push the CUSUM
    up. A rank's CUSUMs start once it has ``warmup`` steps (the null needs them) and are capped
    at ``cap`` so they fall back soon after a fault ends. ``effect`` is a moving average
    (``effect_span`` steps) of the relative departure itself, for a minimum effect size.
    """

    def __init__(self, metrics: int, *, clip: float, k: Sequence[float], cap: float,
                 warmup: int, null_span: int, effect_span: int, sd_floor: float) -> None:
        if len(k) != metrics:
            raise ValueError(f"need one allowance k per metric ({metrics}), got {list(k)}")
        self.clip, self.cap, self.warmup = clip, cap, warmup
        self.k: FloatArray = np.asarray(k, dtype=np.float64)[:, None]
        self.null_alpha, self.effect_alpha = 2.0 / (null_span + 1), 2.0 / (effect_span + 1)
        self.sd_floor = sd_floor
        self.metrics = metrics
        self.seen: IntArray = np.zeros((metrics, 0), dtype=np.int64)
        self.mean: FloatArray = np.zeros((metrics, 0))
        self.square: FloatArray = np.zeros((metrics, 0))
        self.up: FloatArray = np.zeros((metrics, 0))
        self.down: FloatArray = np.zeros((metrics, 0))
        self.effect: FloatArray = np.zeros((metrics, 0))

    @property
    def capacity(self) -> int:
        """Rank slots held."""
        return int(self.seen.shape[1])

    def grow(self, n: int) -> None:
        """Hold at least ``n`` rank slots (doubling, so ranks joining few at a time are cheap)."""
        have = self.capacity
        if n <= have:
            return
        extra = max(n, 2 * have) - have
        for name in ("seen", "mean", "square", "up", "down", "effect"):
            old = getattr(self, name)
            setattr(self, name, np.concatenate(
                [old, np.zeros((self.metrics, extra), dtype=old.dtype)], axis=1))

    def update(self, rows: IntArray | slice, z: FloatArray, effect: FloatArray,
               ok: np.ndarray[Any, Any]) -> FloatArray:
        """Feed one step (``z``, ``effect``: metrics x ranks; ``ok``: has a value).

        Returns ``u``, the standardized score of the step (NaN where not ``ok``); the
        CUSUMs, moving averages and counts of ``rows`` are updated in place.
        """
        clip = self.clip
        everyone = bool(ok.all())  # the usual step: every rank has every value
        seen = self.seen[:, rows] + ok
        if everyone:  # the same arithmetic without the masks (where(True, a, b) is a)
            zc = np.maximum(np.minimum(z, clip), -clip)
            inv = 1.0 / np.maximum(seen, 1)
            w = np.maximum(inv, self.null_alpha)
            we = np.maximum(inv, self.effect_alpha)
            ready = seen >= self.warmup
        else:
            zc = np.where(ok, np.maximum(np.minimum(z, clip), -clip), 0.0)
            inv = 1.0 / np.maximum(seen, 1)
            # A running mean until the span is reached: no start-up bias toward 0.
            w = np.where(ok, np.maximum(inv, self.null_alpha), 0.0)
            we = np.where(ok, np.maximum(inv, self.effect_alpha), 0.0)
            effect = np.where(ok, effect, 0.0)
            ready = ok & (seen >= self.warmup)
        old_mean = self.mean[:, rows]
        mean = old_mean + w * (zc - old_mean)
        old_square = self.square[:, rows]
        square = old_square + w * (zc * zc - old_square)
        old_effect = self.effect[:, rows]
        eff = old_effect + we * (effect - old_effect)
        every_ready = bool(ready.all())
        var = square - mean * mean
        if every_ready:
            null_mean = row_medians(mean, min_peers=1)[:, None]
            null_var = row_medians(var, min_peers=1)[:, None]
        else:
            null_mean = row_medians(np.where(ready, mean, math.nan), min_peers=1)[:, None]
            null_var = row_medians(np.where(ready, var, math.nan), min_peers=1)[:, None]
        sd = np.sqrt(np.fmax(null_var, self.sd_floor ** 2))
        u = np.maximum(np.minimum((zc - null_mean) / sd, clip), -clip)
        old_up, old_down = self.up[:, rows], self.down[:, rows]
        up = np.minimum(np.maximum(old_up + u - self.k, 0.0), self.cap)
        down = np.minimum(np.maximum(old_down - u - self.k, 0.0), self.cap)
        if not every_ready:
            u = np.where(ready, u, math.nan)
            up = np.where(ready, up, old_up)
            down = np.where(ready, down, old_down)
        self.seen[:, rows], self.mean[:, rows], self.square[:, rows] = seen, mean, square
        self.up[:, rows], self.down[:, rows], self.effect[:, rows] = up, down, eff
        return np.asarray(u, dtype=np.float64)
