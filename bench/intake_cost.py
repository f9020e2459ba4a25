"""What turning a batch's records into the stored tables' columns costs the store thread.

The store thread builds the Arrow tables of a batch's sample batches and step batches
(:func:`~trainguard.pipeline.sinks.columns.sample_tables`,
:func:`~trainguard.pipeline.sinks.columns.step_tables`) before chdb inserts them. Here one
:class:`bench.loadgen.FleetLoad` tick of ``--nodes`` nodes (the worker's 16,000-message
batch at 8,000 nodes) is decoded once, and each builder runs ``--rounds`` times on it;
printed: the median thread CPU of one run, per builder, and per record.

No store and no worker: the figure moves only with the builders' code, so the same
command compares code versions back to back, alternating::

    PYTHONPATH=/path/to/old/checkout python bench/intake_cost.py
    python -m bench.intake_cost
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import msgspec

from bench.loadgen import FleetLoad
from trainguard.pipeline.sinks.columns import sample_tables, step_tables, warm_up
from trainguard.schemas.records import GpuSampleBatch, StepBatch
from trainguard.schemas.topics import Topics


def intake_cost(nodes: int = 8_000, rounds: int = 9) -> dict[str, float]:
    """Median thread CPU milliseconds of one run of each builder on one tick's records."""
    warm_up()
    topics = Topics()
    messages = list(FleetLoad(topics, nodes).tick(0, 1.7e9))
    samples = [(msgspec.json.decode(value, type=GpuSampleBatch), 0, i)
               for i, (topic, _, value) in enumerate(messages) if topic == topics.samples]
    steps = [(msgspec.json.decode(value, type=StepBatch), 0, i)
             for i, (topic, _, value) in enumerate(messages) if topic == topics.steps]
    gc.freeze()  # the records live as long as the worker's batch does
    runs: dict[str, list[float]] = {"samples": [], "steps": []}
    for _ in range(rounds):
        for name, build, items in (("samples", sample_tables, samples),
                                   ("steps", step_tables, steps)):
            start = time.thread_time()
            build(items)
            runs[name].append(time.thread_time() - start)
    return {name: 1000 * statistics.median(values) for name, values in runs.items()}


def main() -> None:
    """Print the medians, per run and per record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    for name, ms in intake_cost(args.nodes, args.rounds).items():
        print(f"  {name:<8} {ms:8.1f} ms per {args.nodes:,} records = "
              f"{1000 * ms / args.nodes:6.2f} µs per record")


if __name__ == "__main__":
    main()
