"""One stream worker at cluster scale: capacity, sustained rate, latency, and where time goes.

Three measurements, each against a real local broker and a real worker process (baseline
detectors on, embedded chdb store), fed by :class:`bench.loadgen.FleetLoad`: every node
sends one GPU sample batch (8 GPUs) and one step batch (8 ranks) per tick.

``capacity``: ticks of ``--nodes`` nodes are produced into Kafka first, then one worker
drains them. The rate is messages stored divided by the span of the store's own
``ingested_at`` stamps, so worker start-up is not counted. Reported: node batches/s, GPU
samples/s and step records/s, worker CPU (its process, embedded store included) per
1,000 GPU samples with their step records, and the workers a 10,000-node cluster needs.
By default each message is its own record batch, as each node's agent sends it (the
worker decompresses and unpacks one small batch per message); ``--framing packed`` packs
~1 MB batches per partition, as rounds 1-8 of issue #17 measured.

``realtime``: the fleet ticks at 1 Hz in wall time while the worker runs; after a 40 s
warm-up one GPU collapses every 5 s. Reported: lag (messages produced but not stored)
sampled every tick; the rate the worker stored over the second half of the measured
window, against the rate offered (below it, the lag grows for good: not a warm-up
transient); worker CPU, and sample → anomaly latency twice: to the anomalies
topic (the anomaly message's Kafka timestamp, stamped as the worker sends it; the alert
stream job reads that topic and pages) and to the store (an anomaly row's
``ingested_at``, which dashboards read), each minus the event time of the sample that
confirmed the anomaly. Real time sends packed batches: a generator of one batch per message
(~170 µs each in aiokafka) could not offer 10,000 messages/s beside the worker on 2 cores;
the capacity runs say what the agents' framing costs the worker.

``stages``: the worker's stages timed in-process on 2,000-message batches (decode and
intake lines, detectors, store insert), and a bare Faust agent's ceiling
(``take_events`` over the same messages, no work), to say why the capacity is what it is.

    python -m bench.pipeline capacity --nodes 10000 --ticks 12 [--auth] [--framing packed]
    python -m bench.pipeline realtime --nodes 1000 2000 --seconds 90
    python -m bench.pipeline stages
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from bench.loadgen import FleetLoad
from bench.procstat import proc_cpu_seconds
from bench.quantiles import quantile
from bench.stages import run_stages
from trainguard.local.broker import LocalBroker, free_ports
from trainguard.local.stack import LocalStack
from trainguard.local.worker import WorkerProcess
from trainguard.schemas.auth import FleetSigner

_WARMUP_TICKS = 40  # the detectors give no verdict before 30 values
CLUSTER_NODES = 10_000


class _Producer:
    """An aiokafka producer on its own event loop, configured like the agents' sender.

    It stands in for 10,000 agents on one machine, so it sends like one client that
    knows its keys: each key's partition is the default partitioner's (murmur2), computed
    once, and each (topic, partition) gets whole record batches (zstd, as the agents
    compress), built with aiokafka's batch builder rather than one ``send`` and future
    per message. The bytes, keys, partitions and headers are the same either way; the
    per-message path took ~0.3 of the 2 cores at 5,000 nodes, this one a third of that
    (BENCHMARKS.md, "One worker after round 4"). With ``per_node`` each message is a batch
    of its own, framed as the agents send it.
    """

    def __init__(self, bootstrap: str, *, per_node: bool = False,
                 compression: str = "zstd") -> None:
        from aiokafka import AIOKafkaProducer

        if compression == "lz4":
            _frame_lz4_as_the_agents()

        #: One record batch per message, as each node's agent sends (its own producer, a
        #: tick's two messages on two topics): the worker then decompresses and unpacks
        #: one small batch per message instead of one ~1 MB batch per partition.
        self.per_node = per_node

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                        enable_idempotence=True,
                                        compression_type=compression,
                                        linger_ms=0 if per_node else 20,
                                        max_batch_size=1 << 20)
            await producer.start()
            return producer

        self._loop = asyncio.new_event_loop()
        self._p = self._loop.run_until_complete(start())
        self._partitions: dict[str, list[int]] = {}
        self._key_partition: dict[tuple[str, bytes], int] = {}

    def send_all(self, messages: Iterable[tuple[str, bytes, bytes]],
                 signer: FleetSigner | None = None) -> int:
        async def go() -> int:
            queued: dict[tuple[str, int], list[Any]] = {}
            n = 0
            for t, k, v in messages:
                headers = [] if signer is None else signer.headers(
                    msgspec.json.decode(v, type=_Node).node, t, k, v)  # as its agent would
                batches = queued.setdefault((t, await self._partition(t, k)), [])
                if self.per_node or not batches or batches[-1].append(
                        timestamp=None, key=k, value=v, headers=headers) is None:
                    batches.append(self._p.create_batch())  # full, or one per message
                    batches[-1].append(timestamp=None, key=k, value=v, headers=headers)
                n += 1
            # aiokafka holds one unsent batch per partition: each partition's own task.
            await asyncio.gather(*(self._send(t, p, batches)
                                   for (t, p), batches in queued.items()))
            return n

        return self._loop.run_until_complete(go())

    async def _send(self, topic: str, partition: int, batches: list[Any]) -> None:
        """Send ``batches`` to one partition in order; wait until all are acknowledged."""
        futures = [await self._p.send_batch(b, topic, partition=partition) for b in batches]
        await asyncio.gather(*futures)

    async def _partition(self, topic: str, key: bytes) -> int:
        """The default partitioner's partition for ``key`` (cached)."""
        got = self._key_partition.get((topic, key))
        if got is None:
            from aiokafka.partitioner import DefaultPartitioner

            if topic not in self._partitions:
                self._partitions[topic] = sorted(await self._p.partitions_for(topic))
            parts = self._partitions[topic]
            got = self._key_partition[(topic, key)] = DefaultPartitioner()(key, parts, parts)
        return got

    def close(self) -> None:
        self._loop.run_until_complete(self._p.stop())
        self._loop.close()


class _Node(msgspec.Struct):
    node: str


def _frame_lz4_as_the_agents() -> None:
    """Make aiokafka's batch builders write lz4 as the agents' kafka-python does.

    aiokafka's own encoder (cramjam) writes frames that declare no content size, which the
    worker's fast lz4 path leaves to aiokafka's slower decoder; the agents' frames do.
    """
    import importlib

    import kafka.codec

    from trainguard.pipeline.fetch_codec import READERS

    for name in READERS:  # the modules that build batches also read them
        try:
            importlib.import_module(name).lz4_encode = kafka.codec.lz4_encode
        except ImportError:
            continue


def bench_stack(bootstrap: str, work: Path, prefix: str, *,
                start_worker: bool = True, auth: bool = False) -> LocalStack:
    """Topics ``prefix`` and one worker (app ``bench-<prefix>``, embedded store) on a broker.

    With ``auth`` the worker verifies every message's MAC (``stack.signer`` signs).
    """
    return LocalStack(work / prefix, bootstrap=bootstrap, topic_prefix=prefix,
                      app_id=f"bench-{prefix}", batch_within=0.2, log_level="WARNING",
                      start_worker=start_worker, auth=auth)


def stored(worker: WorkerProcess) -> int:
    """Messages in the store: sample batches plus step batches (one row per rank)."""
    return worker.scalar("SELECT (SELECT count() FROM {database}.sample_batches) + "
                         "(SELECT count() FROM {database}.steps)")


def _pid(worker: WorkerProcess) -> int:
    assert worker.pid is not None
    return worker.pid


def capacity(bootstrap: str, work: Path, nodes: int, ticks: int,
             auth: bool = False, per_node: bool = False,
             compression: str = "zstd") -> dict[str, float]:
    """Drain ``ticks`` × ``nodes`` pre-produced ticks with one worker; return its figures.

    With ``auth`` every message is signed and the worker verifies it.
    """
    prefix = f"c{uuid.uuid4().hex[:8]}"
    with bench_stack(bootstrap, work, prefix, start_worker=False, auth=auth) as stack:
        load = FleetLoad(stack.topics, nodes)
        producer = _Producer(bootstrap, per_node=per_node, compression=compression)
        t0 = time.time() - ticks
        started = time.perf_counter()
        sent = sum(producer.send_all(load.tick(k, t0 + k), stack.signer) for k in range(ticks))
        produce_s = time.perf_counter() - started
        producer.close()
        gpus = load.gpus
        want = nodes * ticks * (1 + gpus)  # sample batch rows + step rows
        worker = stack.start_worker()
        cpu0 = wall0 = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            n = stored(worker)
            if n and cpu0 is None:
                cpu0, wall0 = proc_cpu_seconds(_pid(worker)), time.monotonic()
            if n >= want:
                break
            time.sleep(0.25)
        assert cpu0 is not None and wall0 is not None
        cpu1, wall1 = proc_cpu_seconds(_pid(worker)), time.monotonic()
        span = float(worker.query(
            "SELECT max(t) - min(t) FROM (SELECT toFloat64(ingested_at) AS t FROM "
            "{database}.sample_batches UNION ALL SELECT toFloat64(ingested_at) FROM "
            "{database}.steps)").scalar())
        rows = stored(worker)
    messages = 2 * nodes * ticks
    return {"nodes": nodes, "ticks": ticks, "auth": float(auth), "per_node": float(per_node),
            "lz4": float(compression == "lz4"),
            "produced": sent,
            "produce_s": produce_s,
            "stored_rows": rows, "want_rows": want, "span_s": span,
            "msgs_per_s": messages / span, "gpu_samples_per_s": nodes * ticks * gpus / span,
            "cpu_s": cpu1 - cpu0, "wall_s": wall1 - wall0,
            "cpu_ms_per_1000": 1000 * (cpu1 - cpu0) / (nodes * ticks * gpus) * 1000}


def realtime(bootstrap: str, work: Path, nodes: int, seconds: int) -> dict[str, float]:
    """Feed ``nodes`` at 1 Hz for ``seconds`` with collapses after warm-up; return figures."""
    prefix = f"r{uuid.uuid4().hex[:8]}"
    with bench_stack(bootstrap, work, prefix) as stack:
        return _realtime(stack, nodes, seconds)


def _realtime(stack: LocalStack, nodes: int, seconds: int) -> dict[str, float]:
    load = FleetLoad(stack.topics, nodes)
    worker = stack.worker
    producer = _Producer(stack.bootstrap)
    per_tick_rows = nodes * (1 + load.gpus)
    lags: list[int] = []
    marks: list[tuple[float, int]] = []  # (monotonic time, rows stored) once a tick
    late_ticks = injected = 0
    try:
        cpu0 = wall0 = None
        next_at = time.monotonic()
        for i in range(seconds):
            if i == _WARMUP_TICKS:
                cpu0, wall0 = proc_cpu_seconds(_pid(worker)), time.monotonic()
            if i >= _WARMUP_TICKS and i % 5 == 0:
                load.inject((injected * 7919) % nodes, injected % load.gpus, "idle")
                injected += 1
            producer.send_all(load.tick(i, time.time()))
            if i >= _WARMUP_TICKS:
                rows = stored(worker)
                lags.append((i + 1) * per_tick_rows - rows)
                marks.append((time.monotonic(), rows))
            next_at += 1.0
            if time.monotonic() > next_at:
                late_ticks += 1  # the generator itself fell behind real time
            time.sleep(max(0.0, next_at - time.monotonic()))
        assert cpu0 is not None and wall0 is not None
        cpu1, wall1 = proc_cpu_seconds(_pid(worker)), time.monotonic()
        end_lag = seconds * per_tick_rows - stored(worker)
        drain_deadline = time.monotonic() + 60
        while stored(worker) < seconds * per_tick_rows and time.monotonic() < drain_deadline:
            time.sleep(0.5)
        time.sleep(2.0)
        lat = worker.query(
            "SELECT quantile(0.5)(d), quantile(0.99)(d), max(d), count() FROM (SELECT "
            "toFloat64(ingested_at) - toFloat64(ts) AS d FROM {database}.anomalies FINAL "
            "WHERE metric = 'util_gpu_pct')").rows[0]
        on_topic = _topic_latencies(stack.bootstrap, stack.topics.anomalies, "util_gpu_pct")
        other = int(worker.query(
            "SELECT count() FROM {database}.anomalies FINAL WHERE metric != 'util_gpu_pct'"
        ).scalar())
    finally:
        producer.close()
    samples = nodes * load.gpus * (wall1 - wall0)
    rows_per_msg = per_tick_rows / (2 * nodes)
    # The storing rate over the measured window's second half: past the warm-up transient,
    # whether the worker gains on the offered rate (lag falling) or loses to it.
    (t_mid, rows_mid), (t_end, rows_end) = marks[len(marks) // 2], marks[-1]
    return {"nodes": nodes, "seconds": seconds, "late_ticks": late_ticks,
            "lag_msgs_p50": statistics.median(lags) / rows_per_msg,
            "lag_msgs_max": max(lags) / rows_per_msg, "end_lag_msgs": end_lag / rows_per_msg,
            "late_half_s": t_end - t_mid,
            "late_half_msgs_per_s": (rows_end - rows_mid) / rows_per_msg / max(t_end - t_mid, 1e-9),
            "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
            "cpu_ms_per_1000": 1000 * (cpu1 - cpu0) / samples * 1000,
            "lat_p50": lat[0], "lat_p99": lat[1], "lat_max": lat[2], "anomalies": lat[3],
            "topic_p50": quantile(on_topic, 0.5), "topic_p99": quantile(on_topic, 0.99),
            "topic_n": len(on_topic),
            "injected": injected, "other_anomalies": other}


def _topic_latencies(bootstrap: str, topic: str, metric: str) -> list[float]:
    """Per anomaly of ``metric`` on ``topic``: its message's Kafka timestamp minus its ``ts``."""
    from aiokafka import AIOKafkaConsumer

    from trainguard.schemas.records import Anomaly

    async def read() -> list[float]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        out: list[float] = []
        try:
            while batch := await consumer.getmany(timeout_ms=2000):
                for msg in (m for msgs in batch.values() for m in msgs):
                    a = msgspec.json.decode(msg.value, type=Anomaly)
                    if a.metric == metric:
                        out.append(msg.timestamp / 1000 - a.ts)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def _print_capacity(r: dict[str, float]) -> None:
    workers = math.ceil(2 * CLUSTER_NODES / r["msgs_per_s"])
    signed = " (signed, verified)" if r.get("auth") else ""
    framing = ", agent-framed" if r.get("per_node") else ", packed"
    framing += ", lz4" if r.get("lz4") else ""
    print(f"capacity{signed}{framing} {r['nodes']:.0f} nodes x {r['ticks']:.0f} ticks: produced "
          f"{r['produced']:.0f} messages in {r['produce_s']:.1f} s; one worker stored "
          f"{r['stored_rows']:.0f}/{r['want_rows']:.0f} rows in {r['span_s']:.1f} s = "
          f"{r['msgs_per_s']:,.0f} messages/s = {r['gpu_samples_per_s']:,.0f} GPU samples/s + "
          f"{r['gpu_samples_per_s']:,.0f} step records/s; worker CPU "
          f"{100 * r['cpu_s'] / r['wall_s']:.0f}% of a core = {r['cpu_ms_per_1000']:.1f} ms per "
          f"1,000 GPU samples (with their step records); 10,000 nodes x 8 GPUs at 1 Hz "
          f"(20,000 messages/s) need {workers} such workers", flush=True)


def _print_realtime(r: dict[str, float]) -> None:
    print(f"realtime {r['nodes']:.0f} nodes x 8 GPUs at 1 Hz ({r['nodes'] * 8:,.0f} GPU samples/s "
          f"+ as many step records/s, {r['nodes'] * 2:,.0f} messages/s) for {r['seconds']:.0f} s: "
          f"lag p50 {r['lag_msgs_p50']:,.0f} max {r['lag_msgs_max']:,.0f} messages, at end "
          f"{r['end_lag_msgs']:,.0f}; stored {r['late_half_msgs_per_s']:,.0f} messages/s over "
          f"the last {r['late_half_s']:.0f} s (offered {r['nodes'] * 2:,.0f}); worker CPU "
          f"{r['cpu_pct']:.0f}% of a core = "
          f"{r['cpu_ms_per_1000']:.1f} ms per 1,000 GPU samples; sample->anomaly on the topic "
          f"p50 {r['topic_p50']:.2f} s, p99 {r['topic_p99']:.2f} s ({r['topic_n']:.0f}); "
          f"sample->anomaly row p50 "
          f"{r['lat_p50']:.2f} s, p99 {r['lat_p99']:.2f} s, max {r['lat_max']:.2f} s over "
          f"{r['anomalies']} anomalies ({r['injected']:.0f} collapses injected, "
          f"{r['other_anomalies']:.0f} other anomalies); generator late on "
          f"{r['late_ticks']:.0f} ticks", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("capacity", help="drain pre-produced ticks with one worker")
    c.add_argument("--nodes", type=int, nargs="+", default=[CLUSTER_NODES])
    c.add_argument("--ticks", type=int, default=12)
    c.add_argument("--rounds", type=int, default=1)
    c.add_argument("--auth", action="store_true",
                   help="sign every message; the worker verifies the MACs")
    c.add_argument("--compression", choices=("zstd", "lz4"), default="zstd",
                   help="the agents' codec (lz4: framed as kafka-python frames it)")
    c.add_argument("--framing", choices=("agent", "packed"), default="agent",
                   help="agent: one record batch per message, as each node's agent sends "
                        "(default); packed: ~1 MB batches per partition (rounds 1-8)")
    r = sub.add_parser("realtime", help="feed the worker at 1 Hz in wall time")
    r.add_argument("--nodes", type=int, nargs="+", default=[1000])
    r.add_argument("--seconds", type=int, default=90)
    s = sub.add_parser("stages", help="time the worker's stages in-process, and Faust's ceiling")
    s.add_argument("--nodes", type=int, default=2000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tg-pipe-bench-") as tmp:
        work = Path(tmp)
        port, cport = free_ports(2)
        with LocalBroker(work / "kafka", port, cport) as broker:
            if args.mode == "capacity":
                for n in args.nodes:
                    results = [capacity(broker.bootstrap, work, n, args.ticks, args.auth,
                                        per_node=args.framing == "agent",
                                        compression=args.compression)
                               for _ in range(args.rounds)]
                    for res in results:
                        _print_capacity(res)
                    if len(results) > 1:
                        rates = [x["msgs_per_s"] for x in results]
                        print(f"capacity {n} nodes: median {statistics.median(rates):,.0f} "
                              f"messages/s over {len(rates)} rounds "
                              f"({', '.join(f'{x:,.0f}' for x in rates)})", flush=True)
            elif args.mode == "realtime":
                for n in args.nodes:
                    _print_realtime(realtime(broker.bootstrap, work, n, args.seconds))
            else:
                run_stages(broker.bootstrap, work, args.nodes)


if __name__ == "__main__":
    main()
