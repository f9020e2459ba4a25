"""The embedded store's CPU per message, by who spends it: the writer, chdb's insert pool, merges.

``StoreSink.write`` of ticks of a ``--nodes`` fleet (:class:`bench.loadgen.FleetLoad`,
``--batch``-message batches, 16,000 by default as a worker's ``batch_max`` (8,000 before
round 6 of #17), decoded by
:class:`~trainguard.pipeline.ingest.Ingestor` first), one after another in one process,
as the worker's store thread writes them. From the
``--skip``-th tick to the end (and ``--settle`` seconds after, for the merges the last
inserts set off), every thread's CPU is read from ``/proc/self/task/*/stat`` and summed
by thread name: the writing thread (its Python, the msgpack encode and kernel that build the
columns, or Arrow's JSON reader without numba, the part of an insert
chdb runs on the calling thread), chdb's insert pool (``ThreadPool``: reading the Arrow
file, sorting, compressing, the rollup views) and its background merges
(``MergeMutate``). The decode is timed apart and left out of the writer's figure.

Merges are what a short insert benchmark misses (``bench.store_insert`` stops them): every
insert is a part, and ReplacingMergeTree and AggregatingMergeTree tables rewrite their
parts into larger ones in the background. ``--stop-merges`` stops them for some tables
(``SYSTEM STOP MERGES``), to see what each table's merges cost::

    python -m bench.store_threads --nodes 5000 --ticks 40 --skip 20
    python -m bench.store_threads --stop-merges gpu_samples_1m steps_1m
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from bench.procstat import thread_cpu
from bench.stage_costs import _ticks
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.sinks.sources import IngestSources
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store import StoreUrl, migrate, open_store
from trainguard.schemas.topics import Topics

__all__ = ["store_threads"]

def store_threads(nodes: int = 5000, ticks: int = 40, skip: int = 20, settle: float = 3.0,
                  stop_merges: tuple[str, ...] = (), batch: int = 16000) -> dict[str, float]:
    """Microseconds of CPU per message, by thread name, from tick ``skip`` on."""
    if not 0 <= skip < ticks:
        raise ValueError(f"skip must be within 0..ticks-1, got {skip} of {ticks} ticks")
    topics = Topics("stages")
    ingestor = Ingestor(topics)
    store = open_store(StoreUrl.parse(f"chdb://{Path(tempfile.mkdtemp()) / 'store'}"))
    migrate(store)
    for table in stop_merges:
        store.command(f"SYSTEM STOP MERGES {{database}}.{table}")
    sink = StoreSink(store)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as trainguard.pipeline.worker does
    start: dict[str, float] = {}
    messages, decode = 0, 0.0
    for k, tick in enumerate(_ticks(topics, nodes, ticks, batch)):
        if k == skip:
            start, messages, decode = thread_cpu(), 0, 0.0
        for msgs in tick:
            began = time.thread_time()
            result = ingestor.ingest(msgs)
            decode += time.thread_time() - began
            sink.write(result.rows, result.lines, IngestSources(msgs, result))
            messages += len(msgs)
    time.sleep(settle)
    end = thread_cpu()
    store.close()
    spent = {name: end[name] - start.get(name, 0.0) for name in end}
    # The main thread (named after the interpreter) decoded too: that is not the store's.
    main = max(spent, key=lambda name: spent[name] if name.startswith("python") else -1.0)
    spent[main] -= decode
    out = {f"thread {name}": 1e6 * cpu / messages for name, cpu in spent.items() if cpu > 0}
    out["store, all threads"] = 1e6 * sum(spent.values()) / messages
    out["decode (left out)"] = 1e6 * decode / messages
    out["messages"] = float(messages)
    return out


def main() -> None:
    """Print the store's CPU per message by thread, largest first."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--skip", type=int, default=20, help="ticks written before measuring")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds measured after the last write (merges it set off)")
    p.add_argument("--batch", type=int, default=16000, help="messages per write")
    p.add_argument("--stop-merges", nargs="*", default=[], metavar="TABLE")
    args = p.parse_args()
    res = store_threads(args.nodes, args.ticks, args.skip, args.settle,
                        tuple(args.stop_merges), args.batch)
    merges = f", merges stopped on {' '.join(args.stop_merges)}" if args.stop_merges else ""
    print(f"store CPU per message, {args.nodes} nodes, ticks {args.skip}..{args.ticks - 1} "
          f"({res.pop('messages'):,.0f} messages, {args.batch} per write){merges}:")
    for name, us in sorted(res.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<28} {us:7.1f} µs")


if __name__ == "__main__":
    main()
