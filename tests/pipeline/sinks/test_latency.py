"""The store write latency histogram: fixed buckets, cumulative on export."""

from __future__ import annotations

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.sinks.latency import LatencyHistogram


def test_observations_land_in_the_first_bucket_at_or_above_them() -> None:
    h = LatencyHistogram(bounds=(0.1, 1.0))
    for seconds in (0.1, 0.5, 2.0, -0.2):  # a clock step backwards counts as 0
        h.observe(seconds)
    assert h.counts == [2, 1, 1]
    assert h.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert h.count == 4 and h.sum_s == pytest.approx(2.6)


def test_a_copy_does_not_see_later_observations() -> None:
    h = LatencyHistogram(bounds=(1.0,))
    h.observe(0.5)
    copy = h.copy()
    h.observe(0.5)
    assert copy.counts == [1, 0] and copy.sum_s == 0.5


def test_bounds_must_increase() -> None:
    with pytest.raises(ConfigError, match=r"\(1.0, 0.5\)"):
        LatencyHistogram(bounds=(1.0, 0.5))
