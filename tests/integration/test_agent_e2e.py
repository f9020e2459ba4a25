"""The node agent daemon (simulated GPUs, real spool, real step socket) against real Kafka."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from trainguard.agents.config import AgentConfig, KafkaProducerSettings
from trainguard.agents.reporter import StepReporter
from trainguard.agents.runtime import run_agent
from trainguard.local.broker import LocalBroker, free_ports
from trainguard.schemas.codec import RecordDecoder
from trainguard.schemas.records import GpuSampleBatch, Heartbeat, StepBatch
from trainguard.schemas.topics import Topics

pytestmark = pytest.mark.integration


def _config(bootstrap, tmp_path, **kw):
    sock_dir = Path(tempfile.mkdtemp(prefix="tg-", dir="/tmp"))  # AF_UNIX paths are short
    fields = dict(
        kafka=KafkaProducerSettings(bootstrap=bootstrap, request_timeout_ms=3000,
                                    delivery_timeout_ms=5000),
        cluster="e2e", node="agent-node", topics=Topics(f"a{uuid.uuid4().hex[:8]}"),
        interval_s=0.1, heartbeat_interval_s=1.0, backend="simulated", sim_gpus=4,
        spool_dir=tmp_path / "spool", steps_socket=sock_dir / "steps.sock",
    )
    fields.update(kw)
    return AgentConfig(**fields)


def _consume(make_consumer, topic, decoder_type, expected, timeout=60):
    consumer = make_consumer(topic, consumer_timeout_ms=1000)
    decoder = RecordDecoder(decoder_type)
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(decoder.decode(r.value) for r in records)
    # Anything beyond what we expect would be a duplicate: read a little longer.
    for records in consumer.poll(timeout_ms=1500).values():
        got.extend(decoder.decode(r.value) for r in records)
    return got


def _run_in_thread(config, ticks=None):
    stop = threading.Event()
    ready = threading.Event()
    result = {}

    def target():
        result["agent"] = run_agent(config, stop, max_ticks=ticks, on_ready=lambda a: ready.set())

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(30), "agent did not start"
    return stop, thread, result


def test_samples_steps_and_heartbeats_arrive_decoded_and_complete(bootstrap, tmp_path,
                                                                  make_consumer):
    config = _config(bootstrap, tmp_path)
    stop, thread, result = _run_in_thread(config)
    reporters = [StepReporter("job-7", rank, 2, socket_path=str(config.steps_socket),
                              node="agent-node", local_rank=rank) for rank in range(2)]
    for step in range(20):
        for r in reporters:
            assert r.report(step, loss=2.0 - step * 0.01, grad_norm=1.5, lr=3e-4,
                            step_time_s=0.1, tokens_per_s=1e5, param_checksum="abc")
        time.sleep(0.01)
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for payload in (b"garbage", b'{"v": 1, "pid": 1, "dropped": 0, "step": {"rank": -1}}'):
        bad.sendto(payload, str(config.steps_socket))
    bad.close()
    time.sleep(1.5)  # a heartbeat interval, so the last one carries the malformed count
    stop.set()
    thread.join(30)
    agent = result["agent"]

    samples = _consume(make_consumer, config.topics.samples, GpuSampleBatch, agent.batches_sent)
    assert len(samples) == agent.batches_sent > 10
    assert sorted(b.seq for b in samples) == list(range(agent.batches_sent))
    assert all(len(b.gpus) == 4 and b.gpus[0].util_gpu_pct is not None for b in samples)

    batches = _consume(make_consumer, config.topics.steps, StepBatch, 1)
    steps = [s for b in batches for s in b.steps]
    assert sorted((s.rank, s.step) for s in steps) == [(r, s) for r in range(2) for s in range(20)]
    assert all(s.job_id == "job-7" and s.grad_norm == 1.5 and s.param_checksum == "abc"
               for s in steps)

    beats = _consume(make_consumer, config.topics.heartbeats, Heartbeat, 2)
    last = max(beats, key=lambda h: h.seq)
    assert last.counters.steps_received == 40
    assert last.counters.steps_malformed == 2
    assert last.counters.batches_sent == agent.batches_sent
    assert last.counters.rss_bytes and last.counters.rss_bytes > 0


def test_nothing_is_lost_or_duplicated_across_a_broker_outage(tmp_path):
    port, cport = free_ports(2)
    broker = LocalBroker(tmp_path / "kafka", port, cport)
    broker.start()
    try:
        config = _config(broker.bootstrap, tmp_path)
        stop, thread, result = _run_in_thread(config)
        time.sleep(2)
        broker.stop()
        time.sleep(10)  # longer than the delivery timeout: the sender fails and retries
        broker.start()
        time.sleep(8)  # back: the spool drains
        stop.set()
        thread.join(60)
        agent = result["agent"]
        consumer = KafkaConsumer(config.topics.samples, bootstrap_servers=broker.bootstrap,
                                 group_id=f"t-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                 consumer_timeout_ms=5000)
        seqs = [RecordDecoder(GpuSampleBatch).decode(r.value).seq for r in consumer]
        consumer.close()
        assert agent.batches_sent > 150  # ticks kept coming during the outage
        assert sorted(seqs) == list(range(agent.batches_sent)), "every batch once"
    finally:
        broker.stop()


def test_an_agent_restart_replays_what_was_spooled_while_kafka_was_down(tmp_path):
    port, cport = free_ports(2)
    broker = LocalBroker(tmp_path / "kafka", port, cport)
    config = _config(broker.bootstrap, tmp_path)
    first = run_agent(config, threading.Event(), max_ticks=20, drain_timeout=1)
    assert first.batches_sent == 20
    broker.start()
    try:
        second = run_agent(config, threading.Event(), max_ticks=10, drain_timeout=30)
        consumer = KafkaConsumer(config.topics.samples, bootstrap_servers=broker.bootstrap,
                                 group_id=f"t-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                 consumer_timeout_ms=5000)
        got = [RecordDecoder(GpuSampleBatch).decode(r.value) for r in consumer]
        consumer.close()
        by_agent = {}
        for b in got:
            by_agent.setdefault(b.agent_id, []).append(b.seq)
        assert sorted(by_agent[first.agent_id]) == list(range(20))
        assert sorted(by_agent[second.agent_id]) == list(range(10))
    finally:
        broker.stop()


def test_the_agent_command_flushes_on_sigterm_and_exits_zero(bootstrap, tmp_path):
    prefix = f"c{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "trainguard.cli", "--log-level", "WARNING", "agent",
           "--backend", "simulated", "--sim-gpus", "2", "--interval", "0.1",
           "--bootstrap", bootstrap, "--topic-prefix", prefix, "--node", "sig-node",
           "--spool-dir", str(tmp_path / "spool")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    batches = int(re.search(r"batches=(\d+)", out).group(1))
    assert batches > 5
    consumer = KafkaConsumer(f"{prefix}.gpu-samples.v1", bootstrap_servers=bootstrap,
                             group_id=f"t-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    seqs = sorted(RecordDecoder(GpuSampleBatch).decode(r.value).seq for r in consumer)
    consumer.close()
    assert seqs == list(range(batches)), "everything produced before SIGTERM was delivered"
