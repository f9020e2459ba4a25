"""``RobustWindow.stats`` alone: CPU microseconds per row on full 60-value windows.

Fills ``--rows`` windows (full, the steady state) with normal noise around per-row
levels, optionally rounded to ``--decimals`` (ties, like real telemetry), and times
``stats`` over all rows in calls of ``--per-call`` rows, in CPU time, median of 15.
It runs against whatever ``trainguard`` is on the path (as a script, so ``PYTHONPATH``
decides), so the same command compares code versions back to back::

    PYTHONPATH=. python bench/window_stats.py
    PYTHONPATH=/path/to/old/checkout python bench/window_stats.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from trainguard.pipeline.detect.baseline import RobustWindow

__all__ = ["window_stats"]


def window_stats(rows: int, per_call: int, decimals: int | None, size: int = 60) -> float:
    """Median CPU microseconds per row of ``stats`` over ``rows`` full windows."""
    rng = np.random.default_rng(0)
    win = RobustWindow(rows, size)
    level = rng.uniform(1, 500, rows)
    every = np.arange(rows)
    for _ in range(size):
        x = level * (1 + 0.02 * rng.standard_normal(rows))
        win.push(every, x if decimals is None else np.round(x, decimals))
    order = rng.permutation(rows)
    times = []
    for _ in range(15):
        t = time.process_time()
        for lo in range(0, rows, per_call):
            win.stats(order[lo:lo + per_call])
        times.append(time.process_time() - t)
    return 1e6 * statistics.median(times) / rows


def main() -> None:
    """Print the median per row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--per-call", type=int, default=40_000)
    parser.add_argument("--decimals", type=int, default=None)
    args = parser.parse_args()
    us = window_stats(args.rows, args.per_call, args.decimals)
    print(f"  stats {args.rows} full rows, {args.per_call} a call, decimals={args.decimals}: "
          f"{us:.3f} µs per row")


if __name__ == "__main__":
    main()
