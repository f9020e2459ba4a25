"""A latency histogram in plain Python: fixed buckets, counted where the time is measured.

The store sink observes each batch write here; ``/metrics``
(:mod:`trainguard.pipeline.metrics`) exports it as a Prometheus histogram, so the sink
needs no metrics library and a copy of the counts is cheap to take on the event loop.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from trainguard.errors import ConfigError

__all__ = ["STORE_BATCH_BUCKETS_S", "LatencyHistogram"]

#: Upper bounds (seconds) of the store write latency buckets: a healthy embedded store
#: writes a batch in milliseconds; seconds mean retries or a slow server.
STORE_BATCH_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class LatencyHistogram:
    """Observations counted per bucket (not cumulative), with their sum; +Inf is the last."""

    bounds: tuple[float, ...] = STORE_BATCH_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    sum_s: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ConfigError(f"histogram bounds {self.bounds!r} must be strictly increasing")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        """Count one observation (a negative one, from a clock step, counts as 0)."""
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum_s += seconds

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, ending with +Inf."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def copy(self) -> LatencyHistogram:
        """A copy that later observations do not change."""
        return LatencyHistogram(self.bounds, list(self.counts), self.sum_s)
