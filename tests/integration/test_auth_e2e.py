"""Authenticated telemetry on the real broker: a node's key cannot speak for another node.

In secure mode (SASL_SSL, SCRAM, ACLs): the producers below log in as the ``agent`` user,
as anything on a GPU node can, so the broker lets them write the input topics; the MAC is
what names the node.

The worker requires authenticated input (the stack's fleet secret). A process holding node
A's key (enrolled with ``trainguard keys enrol``) sends one honest sample batch, then sample
and step batches claiming node B; a producer without any key sends one claiming node C.
The honest batch is stored; every other message is a dead letter with reason
``unauthenticated``, and ``forged_telemetry`` fires once per (claimed, real) source pair,
naming A as the real source of B's forgeries.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.transport import KafkaTransport
from trainguard.local.stack import LocalStack
from trainguard.schemas.codec import encode
from trainguard.schemas.keyfiles import enrol_node, read_node_key
from trainguard.schemas.records import GpuSampleBatch, StepBatch, StepRecord

pytestmark = pytest.mark.integration

FORGED = 20


@pytest.fixture
def stack_auth() -> bool:
    """This module's worker requires signed input."""
    return True


@pytest.fixture
def stack_secure() -> bool:
    """On the secure broker: every producer here holds the ``agent`` user's Kafka
    credentials, as a process on a GPU node would; only the node keys tell nodes apart."""
    return True


def _samples(cluster: str, node: str, seq: int, now: float) -> bytes:
    return encode(GpuSampleBatch(cluster=cluster, node=node, ts=now, seq=seq, agent_id="a",
                                 gpus=SimulatedGpus(node, 2).collect(now)))


def _steps(cluster: str, node: str, now: float) -> bytes:
    step = StepRecord(job_id="job-x", rank=0, world_size=1, node=node, step=1, ts=now, loss=1.0)
    return encode(StepBatch(cluster=cluster, node=node, job_id="job-x", ts=now, seq=1,
                            agent_id="a", steps=[step]))


def test_a_node_key_producing_another_nodes_records_is_refused_and_named(
        local_stack: LocalStack, tmp_path: Path, make_producer) -> None:
    worker = local_stack.worker
    worker.start()
    assert local_stack.secure
    assert local_stack.fleet_secret_file is not None
    cluster, topics = f"c-{worker.prefix}", local_stack.topics
    key_file = tmp_path / "node-a.key"
    enrol_node(local_stack.fleet_secret_file, "node-a", key_file)
    kafka = KafkaProducerSettings(bootstrap=local_stack.bootstrap,
                                  security=local_stack.agent_security)
    node_a = KafkaTransport(kafka, node_key=read_node_key(key_file))
    now = time.time()
    try:
        node_a.send(topics.samples, b"node-a", _samples(cluster, "node-a", 0, now))
        for i in range(FORGED):
            node_a.send(topics.samples, b"node-b", _samples(cluster, "node-b", i, now))
        node_a.send(topics.steps, b"job-x", _steps(cluster, "node-b", now))
        node_a.flush(timeout=30)
    finally:
        node_a.close(timeout=10)
    assert node_a.counters.failed == 0
    unsigned = make_producer(bootstrap_servers=local_stack.bootstrap,
                             **local_stack.agent_security.kafka_python_kwargs())
    unsigned.send(topics.samples, key=b"node-c",
                  value=_samples(cluster, "node-c", 0, now)).get(timeout=30)

    honest = (f"SELECT count() FROM {{database}}.sample_batches FINAL WHERE cluster = "
              f"'{cluster}' AND node = 'node-a'")
    assert worker.wait_for(honest, 1) == 1
    refused = FORGED + 2
    assert worker.wait_for("SELECT count() FROM {database}.dead_letters FINAL "
                           "WHERE reason = 'unauthenticated'", refused) == refused
    found = worker.wait_for("SELECT count() FROM {database}.findings FINAL "
                            "WHERE check = 'forged_telemetry'", 2)
    assert found == 2
    rows = worker.query("SELECT observed, expected, nodes, category, cluster FROM "
                        "{database}.findings FINAL WHERE check = 'forged_telemetry' "
                        "ORDER BY observed").rows
    assert [(r[0], r[1], list(r[2]), r[3]) for r in rows] == [
        ("node-a", "node-b", ["node-a", "node-b"], "integrity"),
        ("unauthenticated", "node-c", ["node-c"], "integrity")]
    assert {r[4] for r in rows} == {cluster}
    # The honest batch is stored; nothing claiming B or C is.
    stored = worker.query("SELECT node, count() FROM {database}.sample_batches FINAL "
                          f"WHERE cluster = '{cluster}' GROUP BY node").rows
    assert [(r[0], int(r[1])) for r in stored] == [("node-a", 1)]
    messages = [r[0] for r in worker.query(
        "SELECT message FROM {database}.dead_letters FINAL WHERE reason = 'unauthenticated'").rows]
    assert sum("signed by node 'node-a'" in m for m in messages) == FORGED + 1
    assert worker.alive(), worker.log_tail()
