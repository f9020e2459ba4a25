"""Decode + validate + caps + event-time window per message, with and without the intake line.

``Ingestor.ingest`` timed alone on 2,000-message batches of :class:`bench.loadgen.FleetLoad`
(half sample batches of 8 GPUs, half step batches of 8 ranks), as :mod:`bench.stage_costs`
feeds it, in CPU time (``process_time``: a shared machine's waits do not count), medians.
``stubbed`` replaces the intake line (the store's encoding, issue #17 part B) by a constant,
so the figure is the decode and validation alone; ``decode`` is the codec's
``RecordDecoder.decode`` alone. It runs against whatever ``trainguard`` is on the path, so
two versions compare back to back::

    python -m bench.ingest_cost
    PYTHONPATH=/path/to/other/checkout python bench/ingest_cost.py
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.stage_costs import _batches
from trainguard.pipeline import ingest as ingest_module
from trainguard.schemas.topics import Topics

_BATCH = 2000


def _stub(record: Any, partition: int, offset: int, storable: bool | None = None) -> Any:
    return ("stub", b"")


def ingest_cost(nodes: int = 10_000, ticks: int = 3, rounds: int = 3) -> dict[str, float]:
    """Median µs per message of the ingest with the intake line stubbed, real, and decode."""
    topics = Topics("ingest-cost")
    batches = _batches(topics, nodes, ticks)
    ingestor = ingest_module.Ingestor(topics)
    decoders = ingestor._decoders
    real = ingest_module.intake_line
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as trainguard.pipeline.worker does
    runs: dict[str, Callable[[list[Any]], object]] = {
        "stubbed": ingestor.ingest, "with line": ingestor.ingest,
        "decode": lambda msgs: [decoders[m.topic].decode(m.value) for m in msgs]}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for _ in range(rounds):
            for msgs in batches:
                for name, run in runs.items():
                    ingest_module.intake_line = _stub if name == "stubbed" else real
                    start = time.process_time()
                    out = run(msgs)
                    cpu[name].append(time.process_time() - start)
                    del out
    finally:
        ingest_module.intake_line = real
    return {name: 1e6 * statistics.median(v) / _BATCH for name, v in cpu.items()}


def main() -> None:
    """Print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name, us in ingest_cost(args.nodes, rounds=args.rounds).items():
        print(f"  {name:<10} {us:6.2f} µs per message (CPU, median of {_BATCH}-message batches)")


if __name__ == "__main__":
    main()
