"""TLS cost on throughput: produce and consume rates, plain vs SASL_SSL (SCRAM-SHA-512 + ACLs).

Two local brokers run side by side, one plain and one in secure mode (TLS, SCRAM users,
the standard authorizer with the deployment's ACLs). Each round sends the same real
sample-batch messages (a simulated 8-GPU node's, zstd-compressed by the producer) through
an agent-configured kafka-python producer (acks=all, idempotent, linger 20 ms) to each
broker in turn, from the first send until every message is acknowledged; then an aiokafka
consumer (the worker's client library, as the ``worker`` user) reads that many messages
back from the start of the topic. The rounds alternate between the brokers so both see
the same machine load. Medians over the rounds are printed.

    python -m bench.kafka_tls --messages 10000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from kafka import KafkaProducer

from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.sim import JobSimulator, JobSpec
from trainguard.local.broker import LocalBroker, free_ports
from trainguard.pipeline.kafka_acls import apply_acls, pipeline_acls
from trainguard.pipeline.kafka_admin import ensure_pipeline_topics
from trainguard.schemas.codec import encode
from trainguard.schemas.kafka_security import KafkaSecurity
from trainguard.schemas.topics import Topics

TOPICS = Topics("bench-tls")
PARTITIONS = 3


def _messages(count: int) -> list[tuple[bytes, bytes]]:
    """``count`` real sample-batch messages (key, value), cycling through simulated ticks."""
    spec = JobSpec(job_id="bench-tls", cluster="bench", nodes=8, gpus_per_node=8)
    sim = JobSimulator(spec, None, seed=1, start_ts=time.time())
    out: list[tuple[bytes, bytes]] = []
    while len(out) < count:
        out += [(e.key, encode(e.record)) for e in sim.tick() if e.topic == "samples"]
    return out[:count]


def _prepare(broker: LocalBroker) -> KafkaProducerSettings:
    """Topics (and in secure mode the ACLs) on ``broker``; the agent's producer settings."""
    admin = broker.client_security("admin")
    ensure_pipeline_topics(broker.bootstrap, TOPICS, partitions=PARTITIONS, security=admin)
    if broker.secure:
        apply_acls(broker.bootstrap, admin, pipeline_acls(TOPICS, agents=["agent"],
                                                          workers=["worker"], app_id="bench"))
    return KafkaProducerSettings(bootstrap=broker.bootstrap,
                                 security=broker.client_security("agent"))


def _round(settings: KafkaProducerSettings, messages: list[tuple[bytes, bytes]]) -> float:
    """Seconds from the first send until all ``messages`` are acknowledged."""
    producer = KafkaProducer(**settings.producer_kwargs())
    try:
        producer.send(TOPICS.samples, key=b"warmup", value=messages[0][1]).get(timeout=30)
        started = time.perf_counter()
        futures = [producer.send(TOPICS.samples, key=k, value=v) for k, v in messages]
        producer.flush(timeout=300)
        elapsed = time.perf_counter() - started
        failed = sum(1 for f in futures if f.failed())
        if failed:
            raise RuntimeError(f"{failed} of {len(messages)} messages failed")
        return elapsed
    finally:
        producer.close(timeout=30)


def _consume(bootstrap: str, security: KafkaSecurity, count: int) -> float:
    """Seconds an aiokafka consumer takes to read ``count`` messages from the start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> float:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    group_id=None, **security.aiokafka_kwargs())
        await consumer.start()
        try:
            tps = [TopicPartition(TOPICS.samples, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            read, started = 0, time.perf_counter()
            while read < count:
                if time.perf_counter() - started > 300:
                    raise RuntimeError(f"read {read} of {count} messages in 300 s")
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                read += sum(len(b) for b in batches.values())
            return time.perf_counter() - started
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _print(what: str, count: int, size: float, times: dict[str, list[float]]) -> None:
    rate = {m: count / statistics.median(t) for m, t in times.items()}
    print(f"  {what}:")
    for mode, t in times.items():
        print(f"    {mode:<10} {rate[mode]:>9,.0f} msg/s  {rate[mode] * size / 1e6:6.2f} MB/s  "
              f"(runs: {', '.join(f'{count / x:,.0f}' for x in t)})")
    print(f"    SASL_SSL / PLAINTEXT: {rate['SASL_SSL'] / rate['PLAINTEXT']:.2f}")


def main() -> None:
    """Run the rounds and print the medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10_000, help="messages per round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    messages = _messages(args.messages)
    size = sum(len(v) for _, v in messages) / len(messages)
    with tempfile.TemporaryDirectory(prefix="tg-bench-tls-") as tmp:
        ports = free_ports(4)
        plain = LocalBroker(Path(tmp) / "plain", ports[0], ports[1], heap="384m")
        secure = LocalBroker(Path(tmp) / "secure", ports[2], ports[3], heap="384m",
                             secure=True)
        with plain, secure:
            brokers = {"PLAINTEXT": plain, "SASL_SSL": secure}
            modes = {m: _prepare(b) for m, b in brokers.items()}
            produce: dict[str, list[float]] = {m: [] for m in modes}
            consume: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(args.rounds):
                for mode, settings in modes.items():
                    produce[mode].append(_round(settings, messages))
                    consume[mode].append(_consume(brokers[mode].bootstrap,
                                                  brokers[mode].client_security("worker"),
                                                  len(messages)))
    print(f"{len(messages)} sample batches of {size:.0f} B (8 GPUs) per round, "
          f"{args.rounds} rounds, medians:")
    _print("produce (kafka-python, agent settings: acks=all, idempotent, zstd)",
           len(messages), size, produce)
    _print("consume (aiokafka, the worker's client)", len(messages), size, consume)


if __name__ == "__main__":
    main()
