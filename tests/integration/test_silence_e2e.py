"""A stopped agent pages end to end: simulated job → real Kafka → worker → alerts table.

The job simulator plays a 4-node job into the session's broker; at a known tick the agent
of one node stops (its node sends nothing more, its ranks train on). The worker must raise
``agent_silent`` for that node as a page, decided within 10 s of event time of the node's
last heartbeat.
"""

from __future__ import annotations

import time
import uuid

import pytest

from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.sim import JobSimulator, JobSpec
from trainguard.agents.sim.job import HEARTBEAT_EVERY
from trainguard.agents.sim.player import play
from trainguard.agents.transport import KafkaTransport
from trainguard.schemas.topics import Topics

pytestmark = pytest.mark.integration

SPEED = 4.0  # event seconds per wall second
STOP_AT = 20  # the tick after which node-02's agent sends nothing


def test_a_stopped_agent_pages_within_ten_seconds_of_its_last_heartbeat(
        bootstrap, worker_process):
    worker_process.start()
    prefix = worker_process.prefix
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    spec = JobSpec(job_id=job_id, cluster=f"c-{prefix}", nodes=4, gpus_per_node=4,
                   node_prefix=f"{prefix}-node")
    sim = JobSimulator(spec, seed=1, start_ts=time.time())
    node = f"{prefix}-node-02"

    def stop_agent(t: int) -> None:
        if t == STOP_AT:
            sim.knobs.agent_down.add(2)

    transport = KafkaTransport(KafkaProducerSettings(bootstrap=bootstrap))
    try:
        play([sim], transport.send, Topics(prefix), STOP_AT + 30, speed=SPEED, on_tick=stop_agent)
    finally:
        transport.close(timeout=10)
    last_heartbeat = sim.start_ts + STOP_AT - STOP_AT % HEARTBEAT_EVERY
    assert worker_process.wait_for(
        "SELECT count() FROM {database}.alerts WHERE check = 'agent_silent' AND "
        f"status = 'firing' AND severity = 'page' AND job_id = '{job_id}'", 1) >= 1
    [(alert_node, starts_at, ts)] = [tuple(r) for r in worker_process.query(
        "SELECT node, toFloat64(starts_at), toFloat64(ts) FROM {database}.alerts FINAL "
        f"WHERE check = 'agent_silent' AND status = 'firing' AND job_id = '{job_id}'").rows]
    assert alert_node == node
    # Decided at the last heartbeat + agent_silent_s (8 s) of event time.
    assert starts_at == ts == pytest.approx(last_heartbeat + 8, abs=0.01)
    assert ts - last_heartbeat <= 10
    # The other nodes kept heartbeating: nobody else is silent.
    assert worker_process.scalar(
        "SELECT count() FROM {database}.findings WHERE check = 'agent_silent' AND "
        f"job_id = '{job_id}' AND has(nodes, '{node}') = 0") == 0
