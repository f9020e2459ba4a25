"""What one ``gpu_samples`` insert costs the embedded engine, and which part of it is what.

One tick of ``--nodes`` sample batches (8 GPUs each, :class:`bench.loadgen.FleetLoad`) is
built into its Arrow table once per insert (each a second later in event time, so every
insert is new rows) and inserted through :class:`ChdbStore` as the worker inserts it into
three tables of one store, in turn, ``--inserts`` rounds:

* ``gpu_samples``: the table as ``schemas/sql`` makes it, with its 1-minute rollup view
  (``gpu_samples_1m_mv``), which aggregates every insert;
* ``no-rollup``: a copy of it (``CREATE TABLE ... AS``) without the view;
* ``lz4-no-rollup``: that copy with plain ``CODEC(LZ4)`` on every column that has a codec
  (Gorilla, DoubleDelta and Delta chains with ZSTD(1) in the schema).

Merges are stopped while it runs (``SYSTEM STOP MERGES``): chdb's merge threads belong to
the same process, and a merge of one table would count in another's insert. Reported per
table: the median process CPU of one insert (chdb's threads included), and the compressed
size of what it stored. In turn, in one process, so the three meet the same machine::

    python -m bench.store_insert --nodes 4000 --inserts 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.stage_costs import _batches
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.sinks.columns import sample_tables
from trainguard.pipeline.store import StoreUrl, migrate, open_store
from trainguard.schemas.records import GpuSampleBatch
from trainguard.schemas.topics import Topics

TABLES = ("gpu_samples", "no-rollup", "lz4-no-rollup")


def _copies(store: Any) -> dict[str, str]:
    """The tables compared, by name in :data:`TABLES`: the original and its two copies."""
    db = store.database
    out = {"gpu_samples": "gpu_samples"}
    for name in TABLES[1:]:
        table = "gpu_samples_" + name.replace("-", "_")
        store.command(f"CREATE TABLE {db}.{table} AS {db}.gpu_samples")
        out[name] = table
    columns = store.query(
        "SELECT name, type, compression_codec FROM system.columns "
        f"WHERE database = '{db}' AND table = 'gpu_samples'").rows
    for column, typ, codec in columns:
        if codec:
            store.command(f"ALTER TABLE {db}.{out['lz4-no-rollup']} MODIFY COLUMN `{column}` "
                          f"{typ} CODEC(LZ4)")
    return out


def run(nodes: int, inserts: int) -> dict[str, dict[str, float]]:
    """Per table: median CPU ms per insert, rows per insert, compressed bytes stored."""
    topics = Topics("insert")
    records: list[GpuSampleBatch] = []
    ingestor = Ingestor(topics)
    for msgs in _batches(topics, nodes, 1):
        records += [r for r in ingestor.ingest(msgs).decoded if isinstance(r, GpuSampleBatch)]
    store: Any = open_store(StoreUrl.parse(f"chdb://{Path(tempfile.mkdtemp()) / 'store'}"))
    migrate(store)
    tables = _copies(store)
    store.command("SYSTEM STOP MERGES")
    per: dict[str, list[float]] = {name: [] for name in TABLES}
    for k in range(inserts):
        block = sample_tables([(msgspec.structs.replace(r, ts=r.ts + k), 0, i)
                               for i, r in enumerate(records)])["gpu_samples"]
        for name in TABLES:
            start = time.process_time()
            store._insert_arrow(tables[name], block)
            per[name].append(time.process_time() - start)
            time.sleep(0.2)
    out: dict[str, dict[str, float]] = {}
    for name in TABLES:
        size = store.query(
            "SELECT sum(data_compressed_bytes) FROM system.parts "
            f"WHERE database = '{store.database}' AND table = '{tables[name]}' AND active"
        ).rows[0][0]
        out[name] = {"insert_ms": 1000 * statistics.median(per[name]),
                     "rows_per_insert": float(len(block)), "bytes": float(size)}
    store.command("SYSTEM START MERGES")
    store.close()
    return out


def main() -> None:
    """Print one line per table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=4000)
    p.add_argument("--inserts", type=int, default=20)
    args = p.parse_args()
    results = run(args.nodes, args.inserts)
    base = results["gpu_samples"]["insert_ms"]
    for name, r in results.items():
        print(f"{name:<14} insert {r['insert_ms']:6.1f} ms CPU per {r['rows_per_insert']:,.0f} "
              f"rows (median of {args.inserts}; {r['insert_ms'] / base:.2f}x); stored "
              f"{r['bytes'] / 1e6:.2f} MB compressed", flush=True)


if __name__ == "__main__":
    main()
