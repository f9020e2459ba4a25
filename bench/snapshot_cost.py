"""What one round of state snapshots costs: bytes, and the worker's time on and off its loop.

Builds the state a worker holds at ``--nodes`` nodes (8 GPUs and 8 ranks each, three
input partitions): :class:`bench.loadgen.FleetLoad` ticks are decoded and fed to a
:class:`BaselineStage` and a :class:`ConsistencyStage`, then every live row's two
windows are filled to a steady state (60 values, ``recent`` equal to ``window`` except on
``--alarm-share`` of the rows, as in a fleet where a few rows hold an alarm). The window
values are the row's level times ``1 + 0.02 N(0, 1)``: full-mantissa noise, the worst
case for compression (real telemetry repeats values more often).

Then one snapshot round is timed per partition, as ``StateSnapshots.write`` runs it:

* ``export``: what runs on the event loop: ``StageStates.export`` (gathers, msgpack) in
  old code, ``StageStates.export_later`` since (gathers and folds; since round 13 the
  gathers only, and the consistency stage's step records written whole), thread CPU;
* ``seal``: what the worker runs off the loop, on a thread (the call ``export_later``
  returned: the byte shuffle, msgpack of the header, zstd; zlib of the consistency blob),
  timed here on this thread, where the code has it;
* ``MB``: bytes sent per round (all partitions), and the share of each bank field in
  main's (uncompressed) layout.

It runs against whatever ``trainguard`` is on the path, so the same command compares code
versions back to back::

    PYTHONPATH=. python bench/snapshot_cost.py --nodes 5000
    PYTHONPATH=/path/to/old/checkout python bench/snapshot_cost.py --nodes 5000
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import Counter
from typing import Any

import numpy as np

from bench.loadgen import FleetLoad
from trainguard.pipeline import batches as batches_module
from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.pipeline.snapshots import StageStates
from trainguard.schemas.topics import Topics

__all__ = ["build_state", "snapshot_round"]

_BATCH = 2000


def build_state(nodes: int, ticks: int, alarm_share: float,
                seed: int = 7) -> tuple[BaselineStage, ConsistencyStage]:
    """The two stages after ``ticks`` ticks of ``nodes`` nodes, windows filled."""
    topics = Topics("snapshot-cost")
    load, ingestor = FleetLoad(topics, nodes), Ingestor(topics)
    baselines, checks = BaselineStage(), ConsistencyStage()
    t0 = time.time() - ticks
    for k in range(ticks):
        msgs = [RawMessage(t, i % 3, k * 2 * nodes + i, key, value, time.time())
                for i, (t, key, value) in enumerate(load.tick(k, t0 + k))]
        for j in range(0, len(msgs), _BATCH):
            result = ingestor.ingest(msgs[j:j + _BATCH])
            baselines.observe(result.decoded, result.sources)
            for idx in batches_module._by_job(result.decoded).values():
                checks.observe([result.decoded[i] for i in idx],
                               [result.broker_ts[i] for i in idx],
                               [result.sources[i] for i in idx])
    rng = np.random.default_rng(seed)
    for family in (baselines.gpus, baselines.ranks):
        live = family.live_rows()
        for bank in family.banks.values():
            _fill(bank, live, alarm_share, rng)
    return baselines, checks


def _fill(bank: Any, live: np.ndarray[Any, Any], alarm_share: float,
          rng: np.random.Generator) -> None:
    window, recent = bank.window, bank.recent
    size = window.size
    level = window.buf[live, 0]
    level = np.where(np.isnan(level), 1.0, level)
    window.buf[live] = level[:, None] * (1 + 0.02 * rng.standard_normal((len(live), size)))
    window.pos[live] = rng.integers(0, size, len(live))
    window.count[live] = size
    recent.copy_rows(window, live)
    alarmed = live[rng.random(len(live)) < alarm_share]
    recent.buf[alarmed, : size // 2] *= 1.5


def _field_bytes(baselines: BaselineStage, parts: list[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for part in parts:
        for family in (baselines.gpus, baselines.ranks):
            for bank in family.export(part)["banks"].values():
                for name, array in bank.items():
                    out[name] += array.nbytes
    return out


def snapshot_round(states: StageStates) -> dict[str, float]:
    """One round over every partition: seconds on the loop, off it, and bytes sent."""
    later = getattr(states, "export_later", None)  # this code copies on the loop, packs off it
    out = {"export_cpu": 0.0, "export_wall": 0.0, "seal_wall": 0.0, "seal_cpu": 0.0,
           "bytes": 0.0}
    for part in sorted(states.partitions()):
        gc.collect()
        w, c = time.perf_counter(), time.thread_time()
        seal = later(part) if later is not None else None
        blob = states.export(part) if seal is None else b""
        out["export_cpu"] += time.thread_time() - c
        out["export_wall"] += time.perf_counter() - w
        if seal is not None:
            w, c = time.perf_counter(), time.thread_time()
            blob = seal()
            out["seal_cpu"] += time.thread_time() - c
            out["seal_wall"] += time.perf_counter() - w
        out["bytes"] += len(blob)
    return out


def main() -> None:
    """Build the state once, time ``--rounds`` rounds, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--ticks", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alarm-share", type=float, default=0.02)
    parser.add_argument("--fields", action="store_true", help="bytes per bank field")
    args = parser.parse_args()
    baselines, checks = build_state(args.nodes, args.ticks, args.alarm_share)
    states = StageStates(baselines=baselines, consistency=checks)
    parts = sorted(states.partitions())
    if args.fields:
        fields = _field_bytes(baselines, parts)
        total = sum(fields.values())
        for name, n in fields.most_common():
            print(f"  {name:<22} {n / 1e6:8.1f} MB {100 * n / total:5.1f} %")
        cons = sum(len(checks.export(p)) for p in parts)
        print(f"  consistency blob       {cons / 1e6:8.1f} MB")
    rounds = [snapshot_round(states) for _ in range(args.rounds)]
    med = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    print(f"nodes={args.nodes} partitions={len(parts)} MB/round={med['bytes'] / 1e6:.1f} "
          f"export_cpu_s={med['export_cpu']:.3f} export_wall_s={med['export_wall']:.3f} "
          f"seal_cpu_s={med['seal_cpu']:.3f} seal_wall_s={med['seal_wall']:.3f}")


if __name__ == "__main__":
    main()
