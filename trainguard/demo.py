"""The zero-configuration demo: local broker + embedded store + simulated cluster, end to end.

``trainguard demo --nodes 4 --duration 30`` starts a local Kafka broker (unless bootstrap
servers are given), a stream worker that owns the embedded store, and a simulated fleet
ticking at 1 Hz; it shows progress, waits until every batch is stored, prints row
counts, and stops everything it started, also on Ctrl-C. Each run stamps its records
with its own cluster name (``demo-<run id>``), so its counts are exact even when the
store already holds earlier runs.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.transport import KafkaTransport
from pipeline.store import Store, StoreUrl, open_store, owner_reader
from trainguard.broker import LocalBroker, free_port, port_free
from trainguard.errors import TrainguardError

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger(__name__)

#: Tables that carry the demo run's cluster name, and what each row is.
_TABLES = {
    "sample_batches": "node × tick",
    "gpu_samples": "GPU × tick",
    "agent_heartbeats": "heartbeat",
}


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs against and for how long."""

    nodes: int = 4
    gpus: int = 8
    duration_s: int = 30
    interval_s: float = 1.0
    data_dir: Path = Path("trainguard-data")
    bootstrap: str = ""
    store: str = ""
    topic_prefix: str = "tg"
    kafka_port: int = 9092


def run_demo(opts: DemoOptions, out: Callable[[str], None] = print) -> int:
    """Run the demo; return 0 when every produced batch was stored exactly once."""
    from agents.config import AgentConfig, KafkaProducerSettings
    from agents.fleet import SimulatedFleet
    from schemas.topics import Topics
    from trainguard.commands._common import store_url
    from trainguard.kafka_admin import ensure_topics

    data_dir = opts.data_dir.resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    store_raw = opts.store or f"chdb://{data_dir / 'store'}"
    url: StoreUrl = store_url(store_raw)
    topics = Topics(opts.topic_prefix)
    run_id = uuid.uuid4().hex[:8]
    cluster = f"demo-{run_id}"
    ticks = max(1, round(opts.duration_s / opts.interval_s))
    broker: LocalBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    transport: KafkaTransport | None = None
    worker_log = data_dir / "logs" / "worker.log"
    try:
        bootstrap = opts.bootstrap
        if not bootstrap:
            port = opts.kafka_port if port_free(opts.kafka_port) else free_port()
            broker = LocalBroker(data_dir / "kafka", port=port)
            out(f"[demo] starting local Kafka {broker.bootstrap} (data in {data_dir / 'kafka'})")
            broker.start()
            bootstrap = broker.bootstrap
        ensure_topics(bootstrap, topics.all(), partitions=3, replication_factor=1)
        out(f"[demo] starting stream worker → store {url} (log: {worker_log})")
        worker = _start_worker(bootstrap, store_raw, opts.topic_prefix, data_dir, worker_log)
        store = _wait_for_store(url, worker, worker_log)
        config = AgentConfig(
            kafka=KafkaProducerSettings(bootstrap=bootstrap),
            cluster=cluster,
            node="sim",
            topics=topics,
            interval_s=opts.interval_s,
            sim_gpus=opts.gpus,
        )
        transport = KafkaTransport(config.kafka)
        fleet = SimulatedFleet(config, transport, nodes=opts.nodes, node_prefix=f"{cluster}-node")
        out(
            f"[demo] run {run_id}: {opts.nodes} simulated nodes × {opts.gpus} GPUs, "
            f"{ticks} ticks at {opts.interval_s:g}s"
        )

        def progress(tick: int, sent: int) -> None:
            if tick % 5 == 0 or tick == ticks:
                _check_alive(worker, worker_log)
                stored = _count(store, "sample_batches", cluster)
                out(f"[demo] tick {tick:>4}/{ticks}  batches sent {sent:>6}  stored {stored:>6}")

        sent = fleet.run(ticks, realtime=True, on_tick=progress)
        transport.close(timeout=30)
        failed = transport.counters.failed
        transport = None
        if failed:
            raise TrainguardError(f"{failed} batches failed delivery to Kafka")
        expected = sent
        stored = _wait_for_rows(store, cluster, expected, worker, worker_log)
        counts = {t: _count(store, t, cluster) for t in _TABLES}
        dead = int(store.query("SELECT count() FROM {database}.dead_letters FINAL").scalar())
        out(f"[demo] done: {ticks} ticks × {opts.nodes} nodes = {expected} batches produced")
        out(f"[demo] rows in {url} for cluster {cluster}:")
        for table, what in _TABLES.items():
            out(f"         {table:<18} {counts[table]:>8}   (one per {what})")
        out(f"         {'dead_letters':<18} {dead:>8}   (all runs)")
        out("[demo] look around: trainguard db counts --store " + store_raw)
        store.close()
        return 0 if stored == expected else 1
    except KeyboardInterrupt:
        out("[demo] interrupted; stopping what the demo started")
        raise
    finally:
        if transport is not None:
            transport.close(timeout=5)  # before the broker goes, or it retries noisily
        if worker is not None:
            _stop_worker(worker)
            out("[demo] stream worker stopped")
        if broker is not None:
            broker.stop()
            out("[demo] local Kafka stopped")


def _start_worker(
    bootstrap: str, store: str, prefix: str, data_dir: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "trainguard.cli",
        "--log-level",
        "INFO",
        "worker",
        "--bootstrap",
        bootstrap,
        "--store",
        store,
        "--topic-prefix",
        prefix,
        "--data-dir",
        str(data_dir / "worker"),
        "--batch-within",
        "0.5",
    ]
    with open(log_path, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)


def _check_alive(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    if worker.poll() is not None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise TrainguardError(f"the stream worker exited with {worker.returncode}:\n{tail}")


def _wait_for_store(url: StoreUrl, worker: subprocess.Popen[bytes], log_path: Path) -> Store:
    """Wait until the worker migrated the store and (embedded) serves reads."""
    deadline = time.monotonic() + 90
    last: Exception | None = None
    while time.monotonic() < deadline:
        _check_alive(worker, log_path)
        try:
            # Embedded: only the worker we started counts as the owner (a killed earlier
            # run may have left its owner.json), and we never open the directory ourselves.
            store = owner_reader(url, pid=worker.pid) if url.embedded else open_store(url)
            if store is not None:
                store.query("SELECT count() FROM {database}.sample_batches")
                return store
        except TrainguardError as exc:
            last = exc
        time.sleep(0.5)
    raise TrainguardError(f"the stream worker did not open the store within 90s: {last}")


def _count(store: Store, table: str, cluster: str) -> int:
    sql = f"SELECT count() FROM {{database}}.{table} FINAL WHERE cluster = '{cluster}'"
    return int(store.query(sql).scalar())


def _wait_for_rows(
    store: Store, cluster: str, expected: int, worker: subprocess.Popen[bytes], log_path: Path
) -> int:
    deadline = time.monotonic() + 60
    stored = _count(store, "sample_batches", cluster)
    while stored < expected and time.monotonic() < deadline:
        _check_alive(worker, log_path)
        time.sleep(0.5)
        stored = _count(store, "sample_batches", cluster)
    return stored


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
