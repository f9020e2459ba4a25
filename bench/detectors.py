"""Detector bank throughput: one value per row per tick, for a cluster's worth of rows.

A bank of 80,000 rows (10,000 nodes x 8 GPUs, in jobs of 64 GPUs: each row's peer group)
and one of 10,000 rows are fed normal noise until every window is full, then timed over a
few ticks (median reported). A tick
during warm-up is timed too, since a worker that starts without a snapshot pays it.

    python -m bench.detectors --rows 80000 10000 --ticks 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from trainguard.pipeline.detect import BankConfig, DetectorBank, EntityRegistry

#: GPUs per job: each row's peer group, as the worker passes it (issue #16).
JOB_GPUS = 64


def _tick_times(bank: DetectorBank, rows: np.ndarray, rng: np.random.Generator, t0: float,
                ticks: int) -> tuple[list[float], int]:
    times, found = [], 0
    groups = rows // JOB_GPUS
    for k in range(ticks):
        values = 96.0 + 2.0 * rng.standard_normal(len(rows))
        ts = np.full(len(rows), t0 + k)
        start = time.perf_counter()
        found += len(bank.update(rows, values, ts, groups))
        times.append(time.perf_counter() - start)
    return times, found


def bench_bank(n_rows: int, ticks: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    # Spikes reported as soon as a row is warm, so that the spike tick below builds its
    # records (by default a row must first be quiet for an hour).
    config = BankConfig(spike_quiet_s=0.0)
    bank = DetectorBank("util_gpu_pct", config, capacity=n_rows)
    rows = np.arange(n_rows, dtype=np.int64)
    warm, _ = _tick_times(bank, rows, rng, 0.0, 1)
    # Fill every window, and get past cp_after so the change-point test runs too.
    _tick_times(bank, rows, rng, 1.0, config.cp_after + 5)
    times, found = _tick_times(bank, rows, rng, 1e6, ticks)
    med = statistics.median(times)
    print(f"DetectorBank.update: {n_rows:,} rows/tick in {med * 1e3:.1f} ms "
          f"({n_rows / med / 1e6:.2f} M values/s; median of {ticks} ticks; "
          f"{found} anomalies; first warm-up tick {warm[0] * 1e3:.1f} ms)")
    # 1% of rows spike, then come back: the tick that confirms them builds the records.
    hit = rng.choice(n_rows, n_rows // 100, replace=False)
    spike = 96.0 + 2.0 * rng.standard_normal(n_rows)
    spike[hit] += 60.0
    bank.update(rows, spike, np.full(n_rows, 2e6), rows // JOB_GPUS)
    back = 96.0 + 2.0 * rng.standard_normal(n_rows)
    start = time.perf_counter()
    n_found = len(bank.update(rows, back, np.full(n_rows, 2e6 + 1), rows // JOB_GPUS))
    took = time.perf_counter() - start
    state = sum(a.nbytes for a in bank.state().values()) / bank.capacity
    print(f"  tick confirming {n_found:,} spikes: {took * 1e3:.1f} ms; "
          f"state {state:,.0f} bytes/row ({state * n_rows / 2**20:,.0f} MiB)")


def bench_registry(n_rows: int, seed: int = 0) -> None:
    keys = [f"node-{i // 8:05d}/{i % 8}" for i in range(n_rows)]
    reg = EntityRegistry()
    ts = np.zeros(n_rows)
    reg.rows_for(keys, ts)
    start = time.perf_counter()
    reg.rows_for(keys, ts + 1)
    took = time.perf_counter() - start
    print(f"EntityRegistry.rows_for: {n_rows:,} known keys in {took * 1e3:.1f} ms "
          f"({n_rows / took / 1e6:.2f} M keys/s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[80_000, 10_000])
    p.add_argument("--ticks", type=int, default=5)
    args = p.parse_args()
    for n in args.rows:
        bench_bank(n, args.ticks)
    bench_registry(max(args.rows))


if __name__ == "__main__":
    main()
