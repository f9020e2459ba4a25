"""The agent's own footprint: CPU (% of one core) and resident memory, for heartbeats.

Reads ``/proc/self/statm`` (the path is a parameter, like prometheus/client_python's
process collector) and the process CPU clock; both are cheap enough for every heartbeat.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["ProcessStats"]


class ProcessStats:
    """CPU share since the previous reading, and current RSS."""

    def __init__(
        self,
        *,
        statm: Path = Path("/proc/self/statm"),
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._statm = statm
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._last = (cpu_clock(), wall_clock())

    def cpu_pct(self) -> float | None:
        """Percent of one core used since the previous call (None on the first, too-short span)."""
        cpu, wall = self._cpu_clock(), self._wall_clock()
        last_cpu, last_wall = self._last
        self._last = (cpu, wall)
        span = wall - last_wall
        return None if span <= 0.01 else round(100.0 * (cpu - last_cpu) / span, 3)

    def rss_bytes(self) -> int | None:
        """Resident set size now, or None where /proc is not there."""
        try:
            fields = self._statm.read_text().split()
        except OSError:
            return None
        return int(fields[1]) * self._page
