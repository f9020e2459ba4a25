"""The baselines stage alone, timed in-process: warming up and in steady state.

``bench.stage_costs`` times every stage on six ticks of a 10,000-node fleet: every
entity is then still warming up (``min_samples`` is 30), so the banks learn but judge
nothing. This times :meth:`BaselineStage.observe` in both regimes, on the same
2,000-message batches of :class:`bench.loadgen.FleetLoad` (half sample batches of 8 GPUs,
half step batches of 8 ranks), decoded beforehand, with the worker's GC settings, in CPU
time:

* ``warm-up``: 10,000 nodes, 6 ticks, medians after the first tick (entity registration);
* ``steady``: 1,000 nodes (one batch per tick), 70 ticks, medians over the last 20 ticks,
  when every entity has a full window and is judged.

It runs against whatever ``trainguard`` is on the path, so the same command compares code
versions back to back (as a script, so that ``PYTHONPATH`` decides which code runs)::

    PYTHONPATH=. python bench/baseline_costs.py
    PYTHONPATH=/path/to/old/checkout python bench/baseline_costs.py
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from bench.loadgen import FleetLoad
from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.ingest import Ingestor, IngestResult, RawMessage
from trainguard.schemas.topics import Topics

__all__ = ["baseline_costs"]

_BATCH = 2000
#: (nodes, ticks, batches skipped before the median is taken) per regime.
REGIMES = {"warm-up": (10_000, 6, 10), "steady": (1_000, 70, 50)}


def _decoded(nodes: int, ticks: int) -> list[IngestResult]:
    topics = Topics("baseline-costs")
    load, ingestor = FleetLoad(topics, nodes), Ingestor(topics)
    t0 = time.time() - ticks  # inside the ingest's event-time window
    out = []
    for k in range(ticks):
        msgs = [RawMessage(t, i % 3, k * 2 * nodes + i, key, value, time.time())
                for i, (t, key, value) in enumerate(load.tick(k, t0 + k))]
        out += [ingestor.ingest(msgs[j:j + _BATCH]) for j in range(0, len(msgs), _BATCH)]
    return out


def baseline_costs(regime: str) -> float:
    """Median CPU milliseconds of ``BaselineStage.observe`` per 2,000-message batch.

    CPU time of the process, not wall time: on a machine shared with other work a
    batch's wall time also counts the time it waited for a core.
    """
    nodes, ticks, skip = REGIMES[regime]
    batches = _decoded(nodes, ticks)
    stage = BaselineStage()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as trainguard.pipeline.worker does
    times = []
    for result in batches:
        t = time.process_time()
        stage.observe(result.decoded, result.sources)
        times.append(time.process_time() - t)
    gc.unfreeze()
    return 1000 * statistics.median(times[skip:])


def main() -> None:
    """Print the median per batch and per message of each regime."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=[*REGIMES, "both"], default="both")
    args = parser.parse_args()
    for regime in REGIMES if args.regime == "both" else [args.regime]:
        ms = baseline_costs(regime)
        print(f"  baselines {regime:<8} {ms:8.2f} ms per {_BATCH} messages = "
              f"{1000 * ms / _BATCH:5.1f} µs per message")


if __name__ == "__main__":
    main()
