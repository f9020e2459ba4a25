"""Robust statistics across a step's ranks, and compact per-rank histories.

* :func:`row_medians`: the median of each row of a metrics x ranks matrix, NaN ignored
  (one sort for every metric).
* :func:`group_medians`: the median of one metric within each replica group, vectorized
  over all groups with one sort.
* :func:`push_bits` / :func:`popcount`: the last ``n <= 64`` verdicts of each rank as the
  bits of one ``uint64``, so "k of the last n steps" costs two array operations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainguard.pipeline.consistency.columns import FloatArray, IntArray
from trainguard.pipeline.detect.baseline import MAD_TO_SIGMA

__all__ = [
    "MAD_TO_SIGMA", "UIntArray", "group_medians", "popcount", "push_bits", "row_medians",
]

UIntArray = np.ndarray[Any, np.dtype[np.uint64]]


def row_medians(values: FloatArray, *, min_peers: int) -> FloatArray:
    """Median of each row's finite values; NaN for a row with fewer than ``min_peers``."""
    rows, n = values.shape
    if n == 0:
        return np.full(rows, math.nan)
    counts = np.isfinite(values).sum(axis=1)
    ordered = np.sort(values, axis=1)  # NaN sorts last
    at = np.arange(rows)
    # counts <= n, so both indices stay within the row.
    med = 0.5 * (ordered[at, np.maximum((counts - 1) // 2, 0)] + ordered[at, counts // 2])
    med[counts < min_peers] = math.nan
    return med


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
    hist: UIntArray, rows: IntArray, ok: np.ndarray[Any, Any], bits: np.ndarray[Any, Any],
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
