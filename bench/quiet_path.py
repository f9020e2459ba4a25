"""The detector bank's compiled quiet path against its vectorized numpy path, one metric.

``DetectorBank.update`` timed in CPU time on batches of every row of a bank (40,000 rows
by default: 5,000 nodes × 8 GPUs), once every row's window is full, with
``compiled=True`` and ``compiled=False`` alternated in one run; medians per point, and
their ratio. Rows arrive in a random order (``--order random``, as registry rows of many
partitions interleave in a batch) or sorted::

    python -m bench.quiet_path [--rows 40000] [--order random|sorted]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from trainguard.pipeline.detect import BankConfig, DetectorBank
from trainguard.pipeline.detect.quiet import AVAILABLE, warm_up


def _bank(compiled: bool, rows: int, order: str, seed: int) -> tuple[DetectorBank, list[float]]:
    rng = np.random.default_rng(seed)
    bank = DetectorBank("util_gpu_pct", BankConfig(direction="down"), capacity=rows,
                        compiled=compiled)
    level = rng.uniform(50.0, 100.0, rows)
    times: list[float] = []
    for k in range(bank.config.window + 40):  # fill every window, then time 40 batches
        r = rng.permutation(rows)
        if order == "sorted":
            r.sort()
        x = level[r] + rng.normal(0.0, 1.0, rows)
        started = time.process_time()
        bank.update(r, x, np.full(rows, float(k)))
        if k >= bank.config.window:
            times.append((time.process_time() - started) / rows)
    return bank, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--order", choices=("random", "sorted"), default="random")
    args = parser.parse_args()
    if not AVAILABLE:
        raise SystemExit("numba is not installed: only the numpy path would run")
    warm_up()
    medians: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(2):
        for compiled in (False, True):
            bank, times = _bank(compiled, args.rows, args.order, seed)
            medians[compiled].append(statistics.median(times))
            if compiled and bank._quiet is not None:
                share = bank._quiet.taken / (bank._quiet.taken + bank._quiet.passed)
                print(f"  compiled path took {100 * share:.1f} % of the points")
    numpy_us = 1e6 * statistics.median(medians[False])
    compiled_us = 1e6 * statistics.median(medians[True])
    print(f"DetectorBank.update, {args.rows:,} rows, {args.order} order, one metric "
          f"(CPU, medians of 40 batches, 2 banks each):")
    print(f"  numpy path     {numpy_us:6.3f} µs per point")
    print(f"  compiled path  {compiled_us:6.3f} µs per point  ({numpy_us / compiled_us:.2f}x)")


if __name__ == "__main__":
    main()
