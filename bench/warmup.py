"""What a fleet's first tick costs the baselines: time, and the memory their state holds.

A worker that starts on a running cluster meets every GPU and rank at once: the first
batches register tens of thousands of entities and make room for their per-row state.
This feeds ``--ticks`` :class:`bench.loadgen.FleetLoad` ticks of ``--nodes`` nodes through
an :class:`~trainguard.pipeline.ingest.Ingestor` and a
:class:`~trainguard.pipeline.baselines.BaselineStage` in batches of the worker's size
(16,000 messages), and prints per tick the baselines' wall time, then the process's
resident memory and the bytes of detector state in use.

It runs against whatever ``trainguard`` is on the path, so the same command compares code
versions back to back::

    python -m bench.warmup --nodes 10000
    PYTHONPATH=/path/to/old/checkout python bench/warmup.py --nodes 10000
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.as_worker import tune_like_worker
from bench.loadgen import FleetLoad
from trainguard.agents.collectors.process import ProcessStats
from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.detect.registry import RowArrays
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.schemas.topics import Topics

_BATCH = 16_000  # the worker's batch_max


def _state_mib() -> float:
    """Detector arrays written so far, MiB: every row of the capacity in code that fills
    it (before 2026-12-06), the rows in use (``filled``) after; derived sorted copies too."""
    total = 0
    gc.unfreeze()  # frozen objects (the worker's GC settings) are not in get_objects()
    objects = gc.get_objects()
    gc.freeze()
    for obj in objects:
        if isinstance(obj, RowArrays):
            n = getattr(obj, "filled", obj.capacity)
            arrays = [*obj._arrays.values(), *([obj.sorted] if hasattr(obj, "sorted") else [])]
            total += sum(a[:n].nbytes for a in arrays)
    return total / 2**20


def warmup(nodes: int, ticks: int) -> dict[str, float]:
    """Seconds the baselines took per tick (``tick0``, ``tick1``, ...), then memory, MiB."""
    topics = Topics("warmup")
    load = FleetLoad(topics, nodes)
    ingestor, baselines = Ingestor(topics), BaselineStage()
    tune_like_worker()  # numpy's advice alone moved the first tick 1.6x (round 16)
    out: dict[str, float] = {}
    t0 = time.time() - ticks
    for k in range(ticks):
        msgs = [RawMessage(t, i % 3, k * 2 * nodes + i, key, value, time.time())
                for i, (t, key, value) in enumerate(load.tick(k, t0 + k))]
        spent = 0.0
        for j in range(0, len(msgs), _BATCH):
            result = ingestor.ingest(msgs[j:j + _BATCH])
            started = time.perf_counter()
            baselines.observe(result.decoded, result.sources)
            spent += time.perf_counter() - started
        out[f"tick{k}"] = spent
    out["rss_mib"] = (ProcessStats().rss_bytes() or 0) / 2**20
    out["state_mib"] = _state_mib()
    return out


def main() -> None:
    """Print the figures of one run."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--ticks", type=int, default=3)
    args = p.parse_args()
    figures = warmup(args.nodes, args.ticks)
    ticks = "  ".join(f"{v:.2f}" for k, v in figures.items() if k.startswith("tick"))
    print(f"{args.nodes} nodes: baselines per tick (s): {ticks}; "
          f"resident {figures['rss_mib']:,.0f} MiB, detector state {figures['state_mib']:,.0f} MiB")


if __name__ == "__main__":
    main()
