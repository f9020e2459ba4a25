"""The one quantile the benchmarks report: the nearest rank at or above ``q``, NaN for none.

Latency lists here are short (a dozen injected anomalies to a few thousand alerts), so
an interpolating estimator would report values no message had; the nearest rank is one
that was measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["quantile"]


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (0 <= q <= 1) by nearest rank; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
