"""Witness hashing cost per GB of checkpoint: throughput (MB/s) and CPU seconds per GB.

Writes a checkpoint-sized file of random bytes in a temporary directory, then hashes it
with the agent's :class:`~trainguard.agents.collectors.file_hash.Hasher` (SHA-256 of the
bytes, streamed in 1 MiB chunks) with no budget, ``--rounds`` times; the file is read once
before timing, so the figures are of hashing from the page cache, as right after a save.
Prints the median of the rounds. With ``--budget MB_PER_S`` also one round at that budget,
to show that the wall time follows the budget while the CPU per GB stays put.

    python -m bench.witness --mb 256 --rounds 5 --budget 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from trainguard.agents.collectors.file_hash import Hasher


def _write(path: Path, mb: int) -> None:
    chunk = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(chunk)


def measure(path: Path, mb_per_s: float) -> tuple[float, float]:
    """One hash of ``path``: (wall seconds, CPU seconds of this process)."""
    hasher = Hasher(mb_per_s=mb_per_s, max_file_bytes=1 << 50)
    wall, cpu = time.perf_counter(), time.process_time()
    got = hasher.hash_file(path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if got is None or got.digest is None:
        raise RuntimeError(f"hashing {path} failed: {dict(hasher.skipped)}")
    return wall, cpu


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="checkpoint file size in MiB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.0,
                        help="also one round at this MB/s budget (0: skip)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tg-bench-witness-") as tmp:
        path = Path(tmp) / "shard.pt"
        _write(path, args.mb)
        gb = path.stat().st_size / 1e9
        measure(path, 0)  # warm the page cache
        runs = [measure(path, 0) for _ in range(args.rounds)]
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        out: dict[str, object] = {
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "file_mb": args.mb, "rounds": args.rounds,
            "mb_per_s": round(gb * 1000 / wall, 1),
            "wall_s_per_gb": round(wall / gb, 3), "cpu_s_per_gb": round(cpu / gb, 3),
        }
        if args.budget > 0:
            b_wall, b_cpu = measure(path, args.budget)
            out["budget"] = {"mb_per_s_limit": args.budget,
                             "mb_per_s": round(gb * 1000 / b_wall, 1),
                             "cpu_s_per_gb": round(b_cpu / gb, 3),
                             "cpu_pct_of_core": round(100 * b_cpu / b_wall, 1)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
