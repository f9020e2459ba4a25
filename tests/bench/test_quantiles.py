"""The benchmarks' one quantile: a measured value by nearest rank, NaN for none."""

from __future__ import annotations

import math

from bench.quantiles import quantile


def test_a_quantile_is_a_value_that_was_measured_by_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert quantile(values, 0.5) == 3.0
    assert quantile(values, 0.0) == 1.0
    assert quantile(values, 0.99) == quantile(values, 1.0) == 5.0
    assert quantile(list(range(100)), 0.99) == 99
    assert quantile(list(range(1000)), 0.99) == 990


def test_no_values_have_no_quantile() -> None:
    assert math.isnan(quantile([], 0.5))
