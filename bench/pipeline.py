"""Pipeline at a sustained rate: a worker with detectors fed by a real-time simulated cluster.

One worker process (baseline detectors on, embedded store) consumes a simulated fleet
ticking at 1 Hz in real time. After the warm-up, one GPU collapses every few seconds.
Reported per rate: GPU samples/s sustained, consumer lag at the end (batches produced but
not yet stored), worker CPU per 1,000 GPU samples (from /proc), and end-to-end latency
from a sample's timestamp to its anomaly row landing in the store (``ingested_at - ts``
of the anomaly, both UTC), p50 and p99.

    python -m bench.pipeline --nodes 250 500 --seconds 90
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agents.config import AgentConfig, KafkaProducerSettings
from agents.fleet import SimulatedFleet
from agents.transport import KafkaTransport
from pipeline.store import StoreUrl, owner_reader
from schemas.topics import Topics
from trainguard.broker import LocalBroker, free_ports
from trainguard.kafka_admin import ensure_topics

_TICK = os.sysconf("SC_CLK_TCK")
_WARMUP_TICKS = 40  # the detectors give no verdict before 30 values


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def run(bootstrap: str, work: Path, nodes: int, seconds: int, gpus: int = 8) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    topics = Topics(prefix)
    ensure_topics(bootstrap, topics.all(), partitions=3)
    url = StoreUrl.parse(f"chdb://{work / f'store-{prefix}'}")
    cmd = [sys.executable, "-m", "trainguard.cli", "--log-level", "WARNING", "worker",
           "--bootstrap", bootstrap, "--store", str(url), "--topic-prefix", prefix,
           "--app-id", f"bench-{prefix}", "--data-dir", str(work / f"w-{prefix}"),
           "--batch-within", "0.2"]
    log_path = work / f"worker-{prefix}.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        reader = None
        while reader is None:
            assert worker.poll() is None, log_path.read_text()
            reader = owner_reader(url, pid=worker.pid)
            time.sleep(0.2)
        config = AgentConfig(kafka=KafkaProducerSettings(bootstrap=bootstrap), cluster="bench",
                             node="n", topics=topics, sim_gpus=gpus, heartbeat_interval_s=3600)
        transport = KafkaTransport(config.kafka)
        fleet = SimulatedFleet(config, transport, nodes=nodes, node_prefix="pb")
        names = list(fleet.collectors)
        # Event time is wall time here; start just after a simulated checkpoint dip.
        while not 25 <= time.time() % 600 <= 595 - seconds:
            time.sleep(1)
        cpu0 = wall0 = None
        next_at = time.monotonic()
        injected = 0
        for i in range(seconds):
            if i == _WARMUP_TICKS:
                cpu0, wall0 = _cpu(worker.pid), time.monotonic()
            if i >= _WARMUP_TICKS and i % 5 == 0:
                fleet.collectors[names[injected % len(names)]].inject(injected % gpus, "idle")
                injected += 1
            fleet.tick(time.time())
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        assert cpu0 is not None and wall0 is not None
        cpu1, wall1 = _cpu(worker.pid), time.monotonic()
        stored = int(reader.query("SELECT count() FROM {database}.sample_batches").scalar())
        produced = nodes * seconds
        transport.close(timeout=30)
        samples = nodes * gpus * (wall1 - wall0)
        lat = reader.query(
            "SELECT quantile(0.5)(d), quantile(0.99)(d), count() FROM (SELECT "
            "toFloat64(ingested_at) - toFloat64(ts) AS d FROM {database}.anomalies FINAL "
            "WHERE metric = 'util_gpu_pct')").rows[0]
        print(f"{nodes} nodes x {gpus} GPUs at 1 Hz ({nodes * gpus:,} GPU samples/s offered): "
              f"lag at end {produced - stored} of {produced} batches; worker CPU "
              f"{100 * (cpu1 - cpu0) / (wall1 - wall0):.0f}% of a core = "
              f"{1000 * (cpu1 - cpu0) / samples * 1000:.2f} ms per 1,000 samples; "
              f"sample->anomaly row p50 {lat[0]:.2f} s, p99 {lat[1]:.2f} s "
              f"over {lat[2]} anomalies ({injected} collapses injected)", flush=True)
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[250, 500])
    p.add_argument("--seconds", type=int, default=90)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tg-pipe-bench-") as tmp:
        work = Path(tmp)
        port, cport = free_ports(2)
        with LocalBroker(work / "kafka", port, cport) as broker:
            for n in args.nodes:
                run(broker.bootstrap, work, n, args.seconds)


if __name__ == "__main__":
    main()
