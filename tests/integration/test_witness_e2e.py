"""The agent as a witness, end to end: a real agent hashes a real checkpoint file, and a
trainer reporting another digest for it raises ``witness_mismatch`` in the worker.

Real broker in secure mode (SASL_SSL, SCRAM users, ACLs), real worker process (its own
chdb), a real node agent (simulated GPUs, its witness watching a checkpoint directory with
inotify) and the trainers' real client over the agent's step socket. Rank 1 writes its shard
and reports the digest of different bytes (what trainer code controlled by an insider could
send to cover a modified shard); rank 0 reports its own honestly. Only rank 1 is named.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from trainguard.agents.config import AgentConfig, KafkaProducerSettings, WitnessSettings
from trainguard.agents.reporter import StepReporter
from trainguard.agents.runtime import run_agent
from trainguard.local.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack_secure() -> bool:
    """In secure mode: SASL_SSL with the broker's ACLs, the agent as the ``agent`` user."""
    return True


def _agent(stack: LocalStack, ckpt: Path, spool: Path) -> AgentConfig:
    sock_dir = Path(tempfile.mkdtemp(prefix="tg-", dir="/tmp"))  # AF_UNIX paths are short
    return AgentConfig(
        kafka=KafkaProducerSettings(bootstrap=stack.bootstrap, security=stack.agent_security),
        cluster="wit", node="wit-node", topics=stack.topics,
        interval_s=0.2, heartbeat_interval_s=1.0, backend="simulated",
        sim_gpus=2, spool_dir=spool, steps_socket=sock_dir / "steps.sock",
        witness=WitnessSettings(checkpoint_dirs=(ckpt,), mb_per_s=0.0))


def test_a_trainer_digest_the_file_never_had_is_a_witness_mismatch_naming_the_rank(
        local_stack, worker_process, tmp_path):
    worker_process.start()
    assert local_stack.secure
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    config = _agent(local_stack, ckpt, tmp_path / "spool")
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_agent, args=(config, stop),
                              kwargs={"on_ready": lambda _a: ready.set()}, daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "agent did not start"
        job = f"job-{uuid.uuid4().hex[:6]}"
        ranks = [StepReporter(job, r, 2, socket_path=str(config.steps_socket),
                              node="wit-node", local_rank=r) for r in range(2)]
        now = time.time()
        for step in range(1, 6):
            for rep in ranks:
                rep.report(step, loss=2.0, lr=3e-4, param_checksum="aa11", ts=now + step)
        time.sleep(1.0)  # a few agent ticks: the agent (and its witness) knows the job
        shards = {}
        for rep in ranks:
            path = ckpt / f"step5-rank{rep.rank}.pt"
            data = f"weights of rank {rep.rank}".encode() * 1000
            path.write_bytes(data)  # closed after writing: the witness hashes it
            shards[rep.rank] = (path, hashlib.sha256(data).hexdigest())
        honest = shards[0][1]
        forged = hashlib.sha256(b"the shard as it was before it was modified").hexdigest()
        ranks[0].checkpoint("save", "step5", honest, step=5, ts=now + 5.5,
                            path=str(shards[0][0]))
        ranks[1].checkpoint("save", "step5", forged, step=5, ts=now + 5.5,
                            path=str(shards[1][0]))
        # The job goes on: its event time passes the witness's wait for a matching hash.
        wait = 300.0
        for step in range(6, 12):
            for rep in ranks:
                rep.report(step, loss=2.0, lr=3e-4, param_checksum="aa11",
                           ts=now + 5 + (step - 5) * (wait / 5))
        found = worker_process.wait_for(
            "SELECT count() FROM {database}.findings FINAL WHERE check = 'witness_mismatch' "
            f"AND job_id = '{job}'", 1, timeout=90)
        debug = {t: worker_process.query(q).rows for t, q in {
            "witness": "SELECT node, job_id, subject, path, skipped FROM {database}.witness",
            "ckpt": "SELECT * FROM {database}.checkpoints",
            "dead": "SELECT topic, reason, message FROM {database}.dead_letters",
            "steps": "SELECT count(), max(step) FROM {database}.steps",
            "findings": "SELECT check, job_id, summary FROM {database}.findings"}.items()}
        assert found == 1, debug
        [(ranks_named, nodes, summary)] = worker_process.query(
            "SELECT ranks, nodes, summary FROM {database}.findings FINAL WHERE "
            f"check = 'witness_mismatch' AND job_id = '{job}'").rows
        assert list(ranks_named) == [1] and list(nodes) == ["wit-node"]
        assert str(shards[1][0]) in summary
        stored = worker_process.scalar(
            "SELECT count() FROM {database}.witness FINAL WHERE subject = 'checkpoint' AND "
            f"digest IN ('{honest}', '{shards[1][1]}')")
        assert stored == 2  # both files hashed by the agent itself
        for rep in ranks:
            rep.close()
    finally:
        stop.set()
        thread.join(30)
