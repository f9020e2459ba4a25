"""numba helpers of the compiled quiet path (:mod:`~trainguard.pipeline.detect.quiet`).

Scalar versions of what the vectorized detectors do with numpy (``np.maximum``, an
``Ewm`` update) with numpy's semantics, and the sorted-row operations behind the window's
median and MAD. Each is compiled without the GIL; without numba they stay plain Python
(``AVAILABLE`` is False and nothing calls them on the hot path). ``jit`` and ``AVAILABLE``
are :mod:`trainguard.pipeline.jit`'s, re-exported.
"""

from __future__ import annotations

import numpy as np

from trainguard.pipeline.detect.registry import FloatArray, IntArray
from trainguard.pipeline.jit import AVAILABLE, jit

__all__ = ["AVAILABLE", "ewm_update", "insert_sorted", "jit", "median_mad", "npmax", "npmin",
           "replace_sorted", "sort_first"]


@jit
def npmax(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``np.maximum`` of two floats: NaN if either is NaN."""
    if a != a:
        return a
    return a if a >= b else b


@jit
def npmin(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``np.minimum`` of two floats: NaN if either is NaN."""
    if a != a:
        return a
    return a if a <= b else b


@jit
def insert_sorted(s: FloatArray, n: int, new: float) -> None:  # pragma: no cover - compiled
    """Put ``new`` into sorted ``s[:n]``, making sorted ``s[:n+1]``."""
    j = n - 1
    while j >= 0 and s[j] > new:
        s[j + 1] = s[j]
        j -= 1
    s[j + 1] = new


@jit
def sort_first(s: FloatArray, n: int) -> None:  # pragma: no cover - compiled
    """Insertion-sort ``s[:n]`` in place (a few dozen values, no NaN)."""
    for i in range(1, n):
        insert_sorted(s, i, s[i])


@jit
def _left(s: FloatArray, v: float) -> int:  # pragma: no cover - compiled
    """The first index of sorted ``s`` whose value is not below ``v``.

    A count rather than a binary search: a few dozen compares vectorize, and do not stall on
    branches that go either way.
    """
    n = 0
    for k in range(len(s)):
        n += s[k] < v
    return n


@jit
def replace_sorted(s: FloatArray, old: float, new: float) -> None:  # pragma: no cover - compiled
    """Replace one ``old`` in sorted ``s`` by ``new``, keeping ``s`` sorted."""
    p, q = _left(s, old), _left(s, new)
    if q > p:
        for k in range(p, q - 1):
            s[k] = s[k + 1]
        s[q - 1] = new
    else:
        for k in range(p, q, -1):
            s[k] = s[k - 1]
        s[q] = new


@jit
def _kth(s: FloatArray, median: float, k: int) -> tuple[float, float]:  # pragma: no cover
    """The ``k``-th and ``k+1``-th smallest of ``|s - median|`` over sorted values ``s``.

    The distances grow outward from the middle on both sides, so they are two sorted runs,
    ``A`` (leftward from the middle) and ``B`` (rightward): a binary search finds how many
    of the ``k+1`` smallest come from ``A``.
    """
    n = len(s)
    mid = (n - 1) // 2
    n_a, n_b = mid + 1, n - mid - 1
    lo, hi = max(0, k + 1 - n_b), min(k + 1, n_a)
    while lo < hi:
        t = (lo + hi) >> 1  # t from A and k + 1 - t from B: take more from A?
        if abs(s[mid - t] - median) < abs(s[mid + 1 + k - t] - median):
            lo = t + 1
        else:
            hi = t
    t = lo
    kth = -np.inf
    if t > 0:
        kth = abs(s[mid - (t - 1)] - median)
    if k - t >= 0:
        kth = max(kth, abs(s[mid + 1 + k - t] - median))
    nxt = np.inf
    if t < n_a:
        nxt = abs(s[mid - t] - median)
    if k + 1 - t < n_b:
        nxt = min(nxt, abs(s[mid + 1 + k + 1 - t] - median))
    return kth, nxt


@jit
def median_mad(s: FloatArray) -> tuple[float, float]:  # pragma: no cover - compiled
    """Median and MAD of sorted values, as ``RobustWindow.stats`` computes them for a row."""
    n = len(s)
    lo_rank, hi_rank = (n - 1) // 2, n // 2
    median = 0.5 * (s[lo_rank] + s[hi_rank])
    d_lo, d_next = _kth(s, median, lo_rank)
    return median, 0.5 * (d_lo + (d_next if hi_rank != lo_rank else d_lo))


@jit
def ewm_update(mean: FloatArray, var: FloatArray, n: IntArray, row: int, x: float,
         alpha: float) -> None:  # pragma: no cover - compiled
    """``Ewm.update`` of one row."""
    a = npmax(alpha, 1.0 / (n[row] + 1))
    m = mean[row]
    delta = x - m
    mean[row] = m + a * delta
    var[row] = (1.0 - a) * (var[row] + a * delta * delta)
    n[row] = n[row] + 1
