"""Skeleton throughput: sample batches per second through Kafka → Faust worker → chdb.

Starts its own local broker and a real worker process (embedded store in a temp dir),
then, per round, produces N batches from a simulated fleet as fast as kafka-python
sends them and times until the last one is in the store. Also times the decode/flatten
stage alone (no Kafka, no store) to show where the cost is. Prints medians.

    python -m bench.skeleton --nodes 100 --ticks 100 --gpus 8 --rounds 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.config import AgentConfig, KafkaProducerSettings
from trainguard.agents.fleet import SimulatedFleet
from trainguard.agents.transport import KafkaTransport
from trainguard.local.broker import LocalBroker, free_ports
from trainguard.local.stack import LocalStack
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.schemas.codec import encode
from trainguard.schemas.records import GpuSampleBatch
from trainguard.schemas.topics import Topics


def bench_ingest_stage(gpus: int, n: int = 20_000) -> float:
    """Batches per second through decode + validate + flatten, in-process."""
    topics = Topics("bench")
    ts = time.time()
    payload = encode(
        GpuSampleBatch(
            cluster="b",
            node="n",
            ts=ts,
            seq=0,
            agent_id="a",
            gpus=SimulatedGpus("n", gpus).collect(ts),
        )
    )
    msgs = [RawMessage(topics.samples, 0, i, b"n", payload) for i in range(n)]
    ingestor = Ingestor(topics)
    t0 = time.perf_counter()
    for i in range(0, n, 2000):
        ingestor.ingest(msgs[i : i + 2000])
    return n / (time.perf_counter() - t0)


def bench_end_to_end(
    bootstrap: str,
    work: Path,
    nodes: int,
    ticks: int,
    gpus: int,
    rounds: int,
    detect: bool = False,
) -> list[tuple[float, float]]:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    stack = LocalStack(work / prefix, bootstrap=bootstrap, topic_prefix=prefix,
                       app_id=f"bench-{prefix}", batch_within=None, log_level="WARNING",
                       worker_args=() if detect else ("--no-detect",))
    with stack:
        results = []
        for r in range(rounds):
            cluster = f"bench-{r}"
            config = AgentConfig(
                kafka=KafkaProducerSettings(bootstrap=bootstrap),
                cluster=cluster,
                node="n",
                topics=stack.topics,
                sim_gpus=gpus,
                heartbeat_interval_s=3600,
            )
            transport = KafkaTransport(config.kafka)
            fleet = SimulatedFleet(config, transport, nodes=nodes, node_prefix=f"r{r}")
            expected = nodes * ticks
            t0 = time.perf_counter()
            fleet.run(ticks, start_ts=time.time() - ticks, realtime=False)
            produced_s = time.perf_counter() - t0
            transport.close()
            sql = (
                f"SELECT count() FROM {{database}}.sample_batches FINAL WHERE cluster = '{cluster}'"
            )
            while stack.worker.scalar(sql) < expected:
                stack.worker.check_alive()
                time.sleep(0.05)
            total_s = time.perf_counter() - t0
            results.append((expected / produced_s, expected / total_s))
            print(
                f"round {r + 1}: {expected} batches; produce {expected / produced_s:,.0f}/s; "
                f"end-to-end {expected / total_s:,.0f} batches/s "
                f"({expected * gpus / total_s:,.0f} GPU rows/s)"
            )
        return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--ticks", type=int, default=100)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    stage = [bench_ingest_stage(args.gpus) for _ in range(3)]
    print(
        f"ingest stage (decode+validate+flatten), {args.gpus} GPUs/batch: "
        f"median {statistics.median(stage):,.0f} batches/s"
    )
    with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmp:
        work = Path(tmp)
        port, cport = free_ports(2)
        with LocalBroker(work / "kafka", port, cport) as broker:
            for detect in (False, True):
                label = "with baseline detectors" if detect else "decode + store only"
                print(f"-- worker {label}", flush=True)
                res = bench_end_to_end(
                    broker.bootstrap,
                    work,
                    args.nodes,
                    args.ticks,
                    args.gpus,
                    args.rounds,
                    detect=detect,
                )
                produce = statistics.median(r[0] for r in res)
                e2e = statistics.median(r[1] for r in res)
                print(
                    f"median over {len(res)} rounds ({label}): produce {produce:,.0f} "
                    f"batches/s; Kafka → Faust → chdb {e2e:,.0f} batches/s "
                    f"({e2e * args.gpus:,.0f} GPU samples/s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
