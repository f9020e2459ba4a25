"""Retry delays with full jitter, so a fleet of agents does not reconnect in lockstep.

After a Kafka outage every agent's sender fails at about the same moment; with a plain
doubling backoff they would all retry at the same instants and hit the recovering
brokers together, again and again. Full jitter (the AWS Architecture Blog's "Exponential
Backoff And Jitter") draws each delay uniformly from ``[0, min(cap, base * 2**attempt)]``:
the ceiling still grows exponentially, while the retries spread over the whole window.
"""

from __future__ import annotations

import random

from trainguard.errors import ConfigError

__all__ = ["JitteredBackoff"]


class JitteredBackoff:
    """Delays before successive retries: ``uniform(0, min(cap_s, base_s * 2**attempt))``."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, *,
                 rng: random.Random | None = None) -> None:
        if not 0 < base_s <= cap_s:
            raise ConfigError(f"backoff base_s ({base_s}) must be > 0 and <= cap_s ({cap_s})")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        #: Failures since the last success: the exponent of the next delay's ceiling.
        self.attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # Bounded exponent: 2**attempt would overflow a float after ~1000 failures.
        return min(self.cap_s, self.base_s * 2 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one more failure."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A success: the next failure starts again from ``base_s``."""
        self.attempt = 0
