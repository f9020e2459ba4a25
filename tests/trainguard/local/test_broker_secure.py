"""The local broker in secure mode: SASL_SSL logins, ACLs enforced by the broker, a worker
end to end. Agents may write telemetry only; findings and alerts are the worker's alone."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import TopicAuthorizationFailedError

from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.sim import JobSpec, make_scenario
from trainguard.agents.sim.job import JobSimulator
from trainguard.agents.sim.player import play
from trainguard.agents.transport import KafkaTransport
from trainguard.errors import BrokerError
from trainguard.local.broker import LocalBroker
from trainguard.local.stack import LocalStack
from trainguard.pipeline.kafka_acls import apply_acls, pipeline_acls
from trainguard.pipeline.kafka_admin import ensure_pipeline_topics, wait_for_broker
from trainguard.schemas.kafka_security import KafkaSecurity
from trainguard.schemas.topics import Topics

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(secure_kafka_broker: LocalBroker) -> Topics:
    """A deployment's topics on the secure broker, created by admin, with its ACLs."""
    t = Topics(f"s{uuid.uuid4().hex[:10]}")
    admin = secure_kafka_broker.client_security("admin")
    ensure_pipeline_topics(secure_kafka_broker.bootstrap, t, partitions=1, security=admin)
    apply_acls(secure_kafka_broker.bootstrap, admin,
               pipeline_acls(t, agents=["agent"], workers=["worker"], app_id=f"{t.prefix}-w"))
    return t


@pytest.fixture
def agent_producer(secure_kafka_broker: LocalBroker) -> Iterator[KafkaProducer]:
    """A producer with the agents' settings, logged in as ``agent``."""
    settings = KafkaProducerSettings(bootstrap=secure_kafka_broker.bootstrap,
                                     security=secure_kafka_broker.client_security("agent"),
                                     request_timeout_ms=10_000, delivery_timeout_ms=20_000)
    producer = KafkaProducer(**{**settings.producer_kwargs(), "max_block_ms": 10_000})
    yield producer
    producer.close(timeout=10)


def test_an_agent_writes_telemetry_that_the_worker_user_reads(
        secure_kafka_broker: LocalBroker, topics: Topics, agent_producer: KafkaProducer) -> None:
    meta = agent_producer.send(topics.steps, key=b"job-1", value=b"step").get(timeout=30)
    assert meta.topic == topics.steps and meta.offset >= 0
    consumer = KafkaConsumer(
        topics.steps, group_id=f"{topics.prefix}-w", auto_offset_reset="earliest",
        bootstrap_servers=secure_kafka_broker.bootstrap,
        **secure_kafka_broker.client_security("worker").kafka_python_kwargs())
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while not got and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                got += [(r.key, r.value) for r in records]
    finally:
        consumer.close()
    assert got == [(b"job-1", b"step")]


def test_the_broker_refuses_findings_and_alerts_written_with_agent_credentials(
        topics: Topics, agent_producer: KafkaProducer) -> None:
    for topic in (topics.findings, topics.alerts):
        with pytest.raises(TopicAuthorizationFailedError):
            agent_producer.send(topic, key=b"fp", value=b'{"status":"resolved"}').get(timeout=30)


def test_a_wrong_password_is_refused_at_login(secure_kafka_broker: LocalBroker) -> None:
    right = secure_kafka_broker.client_security("agent")
    wrong = KafkaSecurity.load("SASL_SSL", username="agent", password_env="not-the-password",
                               ca_file=right.ca_file)
    wait_for_broker(secure_kafka_broker.bootstrap, timeout=20, security=right)
    server_log = secure_kafka_broker.log_dir / "server.log"
    refused = "due to invalid credentials with SASL mechanism SCRAM-SHA-512"
    before = server_log.read_text(errors="replace").count(refused)
    # The broker closes the connection of a failed SCRAM login: the client sees no broker.
    with pytest.raises(BrokerError, match="a refused SASL login looks the same"):
        wait_for_broker(secure_kafka_broker.bootstrap, timeout=4, security=wrong)
    assert server_log.read_text(errors="replace").count(refused) > before


def test_a_worker_runs_end_to_end_over_sasl_ssl(secure_kafka_broker: LocalBroker,
                                                tmp_path: Path) -> None:
    prefix = f"s{uuid.uuid4().hex[:10]}"
    with LocalStack(tmp_path, broker=secure_kafka_broker, topic_prefix=prefix, partitions=1,
                    app_id=f"{prefix}-w", batch_within=0.3) as stack:
        spec = JobSpec(job_id=f"job-{prefix}", cluster=f"c-{prefix}", nodes=2,
                       gpus_per_node=4, tp_size=2, checkpoint_every=10, checkpoint_pause_s=1,
                       warmup_steps=3, node_prefix=f"{prefix}-node")
        scenario = make_scenario("weight_tamper", spec, seed=4, at=12, checkpoint_every=10)
        sim = JobSimulator(spec, scenario, seed=4, start_ts=time.time())
        transport = KafkaTransport(KafkaProducerSettings(bootstrap=stack.bootstrap,
                                                         security=stack.agent_security))
        batches = 0

        def send(topic: str, key: bytes, value: bytes) -> None:
            nonlocal batches
            batches += topic == stack.topics.samples
            transport.send(topic, key, value)

        try:
            play([sim], send, stack.topics, 40, speed=8.0)
            transport.send(stack.topics.samples, b"n", b"not msgpack")  # a dead letter
        finally:
            transport.close(timeout=20)
        assert transport.counters.failed == 0 and batches > 0
        worker = stack.worker
        assert worker.wait_for("SELECT count() FROM {database}.sample_batches FINAL "
                               f"WHERE cluster = 'c-{prefix}'", batches, timeout=60) == batches
        # The worker wrote to the dead-letter and findings topics its ACLs grant it.
        assert worker.wait_for("SELECT count() FROM {database}.dead_letters FINAL", 1) >= 1
        assert worker.wait_for("SELECT count() FROM {database}.findings FINAL "
                               f"WHERE job_id = '{spec.job_id}' AND "
                               "check = 'param_divergence'", 1) >= 1
        assert worker.alive()
        assert "SASL_SSL SCRAM-SHA-512 user=worker" in worker.log_path.read_text()
