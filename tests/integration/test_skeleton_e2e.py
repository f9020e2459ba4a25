"""The walking skeleton end to end: simulated agents → real Kafka → Faust worker → chdb."""

from __future__ import annotations

import time

import pytest

from trainguard.agents.config import AgentConfig, KafkaProducerSettings
from trainguard.agents.fleet import SimulatedFleet
from trainguard.agents.transport import KafkaTransport
from trainguard.schemas.codec import encode
from trainguard.schemas.records import GpuSample, GpuSampleBatch
from trainguard.schemas.topics import Topics

pytestmark = pytest.mark.integration

BATCHES = "SELECT count() FROM {database}.sample_batches FINAL"


def _fleet(bootstrap, prefix, nodes):
    config = AgentConfig(
        kafka=KafkaProducerSettings(bootstrap=bootstrap),
        cluster="e2e",
        node="n",
        topics=Topics(prefix),
        sim_gpus=2,
        heartbeat_interval_s=10,
    )
    transport = KafkaTransport(config.kafka)
    return SimulatedFleet(config, transport, nodes=nodes, node_prefix="e2e"), transport


def test_every_batch_is_stored_exactly_once_across_a_worker_kill(worker_process, bootstrap):
    ticks, nodes = 60, 5
    worker_process.start()
    fleet, transport = _fleet(bootstrap, worker_process.prefix, nodes)
    t0 = time.time() - ticks
    fleet.run(ticks // 2, start_ts=t0, realtime=False)
    assert worker_process.wait_for(BATCHES, 1) >= 1

    worker_process.kill()  # mid-stream: some batches stored, offsets possibly not committed
    for i in range(ticks // 2, ticks):
        fleet.tick(t0 + i)
    transport.close(timeout=30)
    assert transport.counters.acked == transport.counters.sent
    worker_process.start()

    expected = ticks * nodes
    assert worker_process.wait_for(BATCHES, expected) == expected, worker_process.log_tail()
    time.sleep(2)  # let any late replay land before checking it collapsed
    assert worker_process.scalar(BATCHES) == expected
    dupes = worker_process.scalar(
        "SELECT count() FROM (SELECT node, ts FROM {database}.sample_batches FINAL "
        "GROUP BY node, ts HAVING count() > 1)"
    )
    assert dupes == 0
    assert worker_process.scalar("SELECT count() FROM {database}.gpu_samples FINAL") == expected * 2
    assert worker_process.scalar("SELECT uniqExact(node) FROM {database}.sample_batches") == nodes


def test_malformed_bytes_go_to_the_dead_letter_topic_while_valid_records_land(
    worker_process, bootstrap, make_producer, make_consumer
):
    worker_process.start()
    topics = Topics(worker_process.prefix)
    valid = GpuSampleBatch(
        cluster="e2e",
        node="ok-node",
        ts=time.time(),
        seq=0,
        agent_id="a",
        gpus=[GpuSample(index=0, util_gpu_pct=90.0)],
    )
    garbage = {
        b"\x00\xff\xfe not json at all": "not_json",
        b'{"kind": "gpu_sample_batch", "node": 5}': "invalid",
        encode(valid).replace(b'"util_gpu_pct":90.0', b'"util_gpu_pct":900.0'): "invalid",
        b'{"kind": "gpu_sample_batch", "schema_version": 99}': "unsupported_version",
    }
    producer = make_producer()
    for i, payload in enumerate(garbage):
        producer.send(topics.samples, key=f"bad-{i}".encode(), value=payload)
    producer.send(topics.samples, key=b"ok-node", value=encode(valid))
    producer.flush()

    assert worker_process.wait_for(BATCHES, 1) == 1
    consumer = make_consumer(topics.dead_letters)
    got = {}
    deadline = time.monotonic() + 30
    while len(got) < len(garbage) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for rec in records:
                got[rec.value] = dict(rec.headers)
    assert set(got) == set(garbage), "every malformed payload arrives byte for byte"
    for payload, reason in garbage.items():
        headers = got[payload]
        assert headers["tg.error.reason"] == reason.encode()
        assert headers["tg.source.topic"] == topics.samples.encode()
        assert headers["tg.error.message"]
    dead_rows = worker_process.wait_for(
        "SELECT count() FROM {database}.dead_letters FINAL", len(garbage)
    )
    assert dead_rows == len(garbage)
    assert worker_process.scalar(BATCHES) == 1


def test_a_busy_worker_stops_promptly_on_sigterm_and_a_restart_stores_the_rest(
    worker_process, bootstrap
):
    # Regression: the worker holds each batch's messages until its store write lands;
    # Faust's stop used to wait for them forever once the agent had stopped.
    from kafka import KafkaProducer

    from bench.loadgen import FleetLoad
    from trainguard.pipeline.kafka_admin import ensure_topics

    topics = Topics(worker_process.prefix)
    ensure_topics(bootstrap, topics.all(), partitions=3)
    nodes, ticks = 200, 20
    load = FleetLoad(topics, nodes)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             compression_type="zstd")
    t0 = time.time() - ticks
    for k in range(ticks):
        for topic, key, value in load.tick(k, t0 + k):
            producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    worker_process.start()
    assert worker_process.wait_for(BATCHES, 1) >= 1  # busy with the backlog now
    assert worker_process.proc is not None
    worker_process.proc.terminate()
    assert worker_process.proc.wait(timeout=60) == 0, worker_process.log_tail()
    worker_process.start()
    expected = nodes * ticks
    assert worker_process.wait_for(BATCHES, expected, timeout=180) == expected, (
        worker_process.log_tail())
    # A batch's step lines are inserted just after its sample lines: wait for them too.
    steps_sql = "SELECT count() FROM {database}.steps FINAL"
    assert worker_process.wait_for(steps_sql, expected * load.gpus, timeout=60) == (
        expected * load.gpus), worker_process.log_tail()
