"""Decode + validate + caps + event-time window per message, against msgspec alone.

``Ingestor.ingest`` timed on 2,000-message batches of :class:`bench.loadgen.FleetLoad`
(half sample batches of 8 GPUs, half step batches of 8 ranks), as :mod:`bench.stage_costs`
feeds it, in CPU time (``process_time``: a shared machine's waits do not count); beside
it ``msgspec``, the bare ``msgspec.json.Decoder.decode`` of the same bytes into the same
record types: the floor no Python around it can go below. ``ingest`` frees its previous
batch's records while it runs (as ``stage_costs`` and a worker do), ``msgspec`` does not.
Medians and minimums over the batches. ``--context`` times the decode stage as
``bench.stage_costs`` does, with the baselines and consistency checks run on each batch in
between, but in CPU time (wall-clock medians of a shared machine swing by ±20 %). It runs
against whatever ``trainguard`` is on the path, so two versions compare back to back::

    python -m bench.ingest_cost [--context]
    PYTHONPATH=/path/to/other/checkout python bench/ingest_cost.py [--context]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec

from bench.stage_costs import _batches
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.schemas.records import (
    CheckpointEvent,
    GpuSampleBatch,
    Heartbeat,
    StepBatch,
    StepRecord,
    WitnessReport,
)
from trainguard.schemas.topics import Topics

_BATCH = 2000


def ingest_cost(nodes: int = 10_000, ticks: int = 1, rounds: int = 5) -> dict[str, float]:
    """Median and minimum µs per message of ``ingest`` and of msgspec alone."""
    topics = Topics("ingest-cost")
    batches = _batches(topics, nodes, ticks)
    ingestor = Ingestor(topics)
    plain = {topics.samples: msgspec.json.Decoder(GpuSampleBatch).decode,
             topics.steps: msgspec.json.Decoder(
                 StepBatch | StepRecord | CheckpointEvent | WitnessReport).decode,
             topics.heartbeats: msgspec.json.Decoder(Heartbeat).decode}
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as trainguard.pipeline.worker does

    def floor(msgs: list[RawMessage]) -> object:
        return [plain[m.topic](m.value) for m in msgs]

    runs: dict[str, Callable[[list[RawMessage]], Any]] = {
        "ingest": ingestor.ingest, "msgspec": floor}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    held: dict[str, Any] = {}
    for _ in range(rounds):
        for msgs in batches:
            for name, run in runs.items():
                start = time.process_time()
                held[name] = run(msgs)
                cpu[name].append(time.process_time() - start)
                if name != "ingest":
                    del held[name]
    out: dict[str, float] = {}
    for name, values in cpu.items():
        out[f"{name} median"] = 1e6 * statistics.median(values) / _BATCH
        out[f"{name} min"] = 1e6 * min(values) / _BATCH
    return out


def in_context(nodes: int = 10_000, ticks: int = 6) -> float:
    """Median CPU ms per 2,000 messages of the decode stage between the other stages.

    As ``bench.stage_costs`` times it: ``ingest`` of a batch while the previous batch's
    result is freed, after the first tick (one-off costs), with the baselines and the
    per-job consistency checks fed each result.
    """
    from bench.stage_costs import _consistency
    from trainguard.pipeline.baselines import BaselineStage
    from trainguard.pipeline.consistency import ConsistencyStage

    topics = Topics("stages")
    batches = _batches(topics, nodes, ticks)
    ingestor, baselines, checks = Ingestor(topics), BaselineStage(), ConsistencyStage()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    cpu: list[float] = []
    for msgs in batches:
        start = time.process_time()
        result = ingestor.ingest(msgs)
        cpu.append(time.process_time() - start)
        baselines.observe(result.decoded, result.sources)
        _consistency(checks, result)
    return 1000 * statistics.median(cpu[len(batches) // ticks:])


def main() -> None:
    """Print the medians and minimums."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--context", action="store_true",
                        help="the decode stage between the baselines and checks, CPU ms")
    args = parser.parse_args()
    if args.context:
        ms = in_context(args.nodes)
        print(f"  decode stage {ms:6.2f} ms per {_BATCH} messages (CPU, median, in context)")
        return
    costs = ingest_cost(args.nodes, rounds=args.rounds)
    for name, us in costs.items():
        print(f"  {name:<15} {us:6.2f} µs per message (CPU, {_BATCH}-message batches)")
    print(f"  around msgspec  {costs['ingest min'] - costs['msgspec min']:6.2f} µs per message "
          "(minimums)")


if __name__ == "__main__":
    main()
