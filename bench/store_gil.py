"""The store thread's CPU per 2,000 messages, split into GIL-held Python and GIL-free calls.

Same batches as :mod:`bench.stage_costs` (``FleetLoad``, 10,000 nodes, medians after the
first tick). Around ``StoreSink.write`` it reads the writing thread's CPU, and the thread
CPU spent inside the calls that release the GIL: chdb's ``query`` and, where the code has
them, Arrow's ``read_json`` and the store's msgpack kernel (compiled without the GIL). The
rest is Python holding the GIL (an upper bound: Arrow compute calls and IPC writes, which
release it too, count as held). ``--batch 16000`` writes batches of the worker's
``batch_max``. Run it against any checkout, back to back::

    PYTHONPATH=/path/to/old/checkout python bench/store_gil.py
    PYTHONPATH=. python bench/store_gil.py --batch 16000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.as_worker import tune_like_worker
from bench.stage_costs import _ticks
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.sinks.sources import IngestSources
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store import StoreUrl, migrate, open_store
from trainguard.schemas.topics import Topics

_INSIDE = {"query": 0.0, "read_json": 0.0, "kernel": 0.0}


def _timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _INSIDE[key] += time.thread_time() - start
    return timed


class _Conn:
    """chdb's connection with its ``query`` timed."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.query = _timed("query", conn.query)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def store_gil(nodes: int = 10_000, ticks: int = 4,
              batch: int = 2_000) -> dict[str, float]:
    """Median milliseconds per 2,000 messages: CPU of the write, and its split.

    ``batch``: messages per write (the worker's ``batch_max`` is 16,000).
    """
    try:
        from trainguard.pipeline.sinks import record_json
        record_json.pa_json.read_json = _timed("read_json", record_json.pa_json.read_json)
    except ImportError:  # before round 2: no JSON reader
        pass
    try:  # round 8 on: the msgpack kernel, compiled without the GIL
        from trainguard.pipeline.sinks import record_pack
        record_pack.unpack = _timed("kernel", record_pack.unpack)
    except (ImportError, AttributeError):
        pass
    topics = Topics("stages")
    batches = [b for tick in _ticks(topics, nodes, ticks, batch=batch) for b in tick]
    ingestor = Ingestor(topics)
    store: Any = open_store(StoreUrl.parse(f"chdb://{Path(tempfile.mkdtemp()) / 'store'}"))
    migrate(store)
    store._shared.conn = _Conn(store._shared.conn)
    sink = StoreSink(store)
    tune_like_worker()  # GC, numpy's advice, malloc: as the worker runs
    rows: list[tuple[float, ...]] = []
    for msgs in batches:
        result = ingestor.ingest(msgs)
        sources = IngestSources(msgs, result)
        _INSIDE.update(query=0.0, read_json=0.0, kernel=0.0)
        thread, process = time.thread_time(), time.process_time()
        sink.write(result.rows, result.lines, sources)
        scale = 2_000 / len(msgs)  # figures per 2,000 messages, whatever the batch
        rows.append(tuple(scale * v for v in (
            time.process_time() - process, time.thread_time() - thread,
            _INSIDE["query"], _INSIDE["read_json"], _INSIDE["kernel"])))
    store._shared.conn = store._shared.conn.conn
    store.close()
    kept = rows[len(batches) // ticks:]

    def median(values: list[float]) -> float:
        return 1000 * statistics.median(values)

    return {"write_cpu": median([r[0] for r in kept]),
            "write_thread": median([r[1] for r in kept]),
            "in_chdb_query": median([r[2] for r in kept]),
            "in_read_json": median([r[3] for r in kept]),
            "in_kernel": median([r[4] for r in kept]),
            "gil_held": median([r[1] - r[2] - r[3] - r[4] for r in kept])}


def main() -> None:
    """Print the medians per 2,000 messages."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=2_000, help="messages per write")
    args = p.parse_args()
    for name, ms in store_gil(args.nodes, batch=args.batch).items():
        print(f"  {name:<14} {ms:8.2f} ms per 2000 messages")


if __name__ == "__main__":
    main()
