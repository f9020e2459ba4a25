"""The worker's per-batch stages timed in-process, comparable across code versions.

Times, on 2,000-message batches of :class:`bench.loadgen.FleetLoad` (10,000 nodes, medians
after the first tick): decode + validate (``Ingestor``), the baselines, the consistency
checks (one call per job, as ``BatchHandler`` runs them since #13), the sink's source map
and the store insert into chdb: wall time; ``write_cpu``, the CPU the whole process (chdb's
threads included) spent during it; ``write_thread``, the CPU of the writing thread alone.
It runs against whatever ``trainguard`` is on the path, so older code (before the per-job
split and the source map existed) is measured the way it ran then::

    python -m bench.stage_costs                                   # this checkout
    PYTHONPATH=/path/to/old/checkout python bench/stage_costs.py  # another version

Six ticks is all warm-up: the detectors judge nothing before 30 values. For the stages in
steady state, past warm-up, give a fleet, a number of ticks and the ticks to skip (the
ticks are generated one at a time, so a long run holds one tick's messages)::

    python -m bench.stage_costs --nodes 5000 --ticks 45 --skip 35
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.as_worker import tune_like_worker
from bench.loadgen import FleetLoad
from trainguard.pipeline import batches as batches_module
from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store import StoreUrl, migrate, open_store
from trainguard.schemas.topics import Topics

_BATCH = 2000
#: Since #13 the handler checks job by job and maps stored rows back to their messages.
_PER_JOB = hasattr(batches_module, "_by_job")


def _batches(topics: Topics, nodes: int, ticks: int) -> list[list[RawMessage]]:
    return [batch for tick in _ticks(topics, nodes, ticks) for batch in tick]


def _ticks(topics: Topics, nodes: int, ticks: int,
           batch: int = _BATCH) -> Iterator[list[list[RawMessage]]]:
    """Each tick's messages in batches of ``batch``, made when the tick is asked for."""
    load = FleetLoad(topics, nodes)
    t0 = time.time() - ticks
    for k in range(ticks):
        msgs = [RawMessage(t, i % 3, k * 2 * nodes + i, key, value, time.time())
                for i, (t, key, value) in enumerate(load.tick(k, t0 + k))]
        yield [msgs[j:j + batch] for j in range(0, len(msgs), batch)]


def _consistency(stage: ConsistencyStage, result: Any) -> None:
    if not _PER_JOB:
        stage.observe(result.decoded)
        return
    for idx in batches_module._by_job(result.decoded).values():
        stage.observe([result.decoded[i] for i in idx], [result.broker_ts[i] for i in idx])


def stage_costs(nodes: int = 10_000, ticks: int = 6, skip: int = 1) -> dict[str, float]:
    """Median milliseconds per 2,000-message batch of each stage, past the first ``skip`` ticks.

    The first tick pays one-off costs (entity registration); the first 30 are warm-up.
    """
    if not 0 <= skip < ticks:
        raise ValueError(f"skip must be within 0..ticks-1, got {skip} of {ticks} ticks")
    topics = Topics("stages")
    batches = (batch for tick in _ticks(topics, nodes, ticks) for batch in tick)
    per_tick = -(-2 * nodes // _BATCH)
    ingestor, baselines, checks = Ingestor(topics), BaselineStage(), ConsistencyStage()
    store = open_store(StoreUrl.parse(f"chdb://{Path(tempfile.mkdtemp()) / 'store'}"))
    migrate(store)
    sink = StoreSink(store)
    tune_like_worker()  # GC, numpy's advice, malloc: as the worker runs
    stages = ("decode", "baselines", "consistency", "sources", "write")
    times: dict[str, list[float]] = {k: [] for k in stages}
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    own: list[float] = []
    for msgs in batches:
        t, c = [time.perf_counter()], [time.process_time()]
        result = ingestor.ingest(msgs)
        t.append(time.perf_counter())
        c.append(time.process_time())
        baselines.observe(result.decoded, result.sources)
        t.append(time.perf_counter())
        c.append(time.process_time())
        _consistency(checks, result)
        t.append(time.perf_counter())
        c.append(time.process_time())
        if _PER_JOB:
            from trainguard.pipeline.sinks.sources import IngestSources
            sources = IngestSources(msgs, result)
            t.append(time.perf_counter())
            c.append(time.process_time())
            mine = time.thread_time()
            sink.write(result.rows, result.lines, sources)
            own.append(time.thread_time() - mine)
        else:
            t.append(time.perf_counter())
            c.append(time.process_time())
            mine = time.thread_time()
            sink.write(result.rows, result.lines)
            own.append(time.thread_time() - mine)
        t.append(time.perf_counter())
        c.append(time.process_time())
        for name, a, b, ca, cb in zip(stages, t, t[1:], c, c[1:], strict=False):
            times[name].append(b - a)
            cpu[name].append(cb - ca)
    store.close()
    first = skip * per_tick
    out = {k: 1000 * statistics.median(v[first:]) for k, v in times.items()}
    # The process's CPU (every thread: chdb's own too) during the write, per batch.
    out["write_cpu"] = 1000 * statistics.median(cpu["write"][first:])
    # ... and of the writing thread alone (its Python and the insert chdb runs on it).
    out["write_thread"] = 1000 * statistics.median(own[first:])
    return out


def main() -> None:
    """Print the medians, and the event loop's share (everything but the store write)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--ticks", type=int, default=6)
    p.add_argument("--skip", type=int, default=1, help="ticks left out of the medians")
    args = p.parse_args()
    costs = stage_costs(args.nodes, args.ticks, args.skip)
    loop = sum(v for k, v in costs.items() if not k.startswith("write"))
    print("code:", "per-job checks + source map (#13)" if _PER_JOB else "before #13")
    for name, ms in costs.items():
        print(f"  {name:<12} {ms:8.2f} ms per {_BATCH} messages")
    print(f"  event loop   {loop:8.2f} ms per {_BATCH} messages = "
          f"{1000 * loop / _BATCH:.1f} µs per message")


if __name__ == "__main__":
    main()
