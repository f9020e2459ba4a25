"""A stopped agent pages end to end: simulated jobs → real Kafka → worker → alerts table.

The job simulator plays two jobs into the session's secure broker (SASL_SSL, ACLs; the
agents as the ``agent`` user): a one-node job whose agent
stops at a known tick (its node sends nothing more, its ranks train on) and a two-node job
that carries on. The worker must raise ``agent_silent`` for the stopped node as a page,
decided within 10 s of event time of the node's last heartbeat. (In a job with peers on
other nodes, ``rank_missing`` on the node's ranks usually pages first and the silence
comes as a ticket ``related_to`` it: one page per incident. Alone in its job, or with
forged steps standing in for its ranks, the silence is the page.)
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
STOP_AT = 20  # the tick after which the one-node job's agent sends nothing


@pytest.fixture
def stack_secure() -> bool:
    """In secure mode: SASL_SSL with the broker's ACLs, the agents as the ``agent`` user."""
    return True


def test_a_stopped_agent_pages_within_ten_seconds_of_its_last_heartbeat(
        local_stack, worker_process):
    worker_process.start()
    assert local_stack.secure
    prefix = worker_process.prefix
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    start = time.time()
    alone = JobSimulator(JobSpec(job_id=job_id, cluster=f"c-{prefix}", nodes=1,
                                 gpus_per_node=4, node_prefix=f"{prefix}-solo"),
                         seed=1, start_ts=start)
    other = JobSimulator(JobSpec(job_id=f"{job_id}-b", cluster=f"c-{prefix}", nodes=2,
                                 gpus_per_node=4, node_prefix=f"{prefix}-node"),
                         seed=2, start_ts=start)
    node = f"{prefix}-solo-00"

    def stop_agent(t: int) -> None:
        if t == STOP_AT:
            alone.knobs.agent_down.add(0)

    transport = KafkaTransport(KafkaProducerSettings(bootstrap=local_stack.bootstrap,
                                                     security=local_stack.agent_security))
    try:
        play([alone, other], transport.send, Topics(prefix), STOP_AT + 30, speed=SPEED,
             on_tick=stop_agent)
    finally:
        transport.close(timeout=10)
    last_heartbeat = start + STOP_AT - STOP_AT % HEARTBEAT_EVERY
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
    # The other job's agents kept heartbeating: nobody else is silent.
    assert worker_process.scalar(
        "SELECT count() FROM {database}.findings WHERE check = 'agent_silent' AND "
        f"job_id = '{job_id}-b'") == 0
