"""A real training job end to end: sabotage injected for real is named, benign runs are quiet.

``torchrun`` (two invocations, one per "node", c10d rendezvous on 127.0.0.1, 2 + 2 CPU
ranks, gloo) trains a small MLP with trainguard's kit attached
(:mod:`tests.integration.trainer_script`); each node's ranks report to their own node agent
process (``trainguard agent --backend simulated``, own step socket, own node name); the
agents produce to the session's real Kafka broker and one real worker process (its own
chdb) runs the checks. Each sabotage is its own job, injected for real — by the training
script (``--fault``), by signals to a rank's pid, by editing a checkpoint shard on disk or
a framework file of one node's torch tree between two runs — and must be found with the
right check naming the right rank and node: hard faults within 10 s and subtle ones within
120 s of event time after the injection. A sharded job (FSDP2 HSDP, 6 ranks: 3 replicas of
2 shards) must compare shard by shard: no param_divergence until one replica is edited, then
that one named. The benign job (lr warmup and decay, eval phases, a clean restart from a
checkpoint, a job stop and an elastic restart with another world size) must raise no
integrity or availability finding.

The agents and the worker are shared by the module; jobs are told apart by their ids.
Per-scenario latency and wall time are printed at the end of the module (``-s``).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.integration.trainer_faults import edit_framework_file, mirror_torch, tamper_shard
from tests.integration.trainer_harness import (
    PAGING,
    Finding,
    Findings,
    Launch,
    NodeAgent,
    Placement,
    RankInfo,
    ScenarioResult,
    culprit,
    make_data,
    pick_rank,
)
from trainguard.local.stack import LocalStack

pytestmark = pytest.mark.integration

HARD_S = 10.0
SUBTLE_S = 120.0
NODES = ("node-a", "node-b")


@dataclass
class Harness:
    stack: LocalStack
    agents: dict[str, NodeAgent]
    findings: Findings
    data: Path
    root: Path
    launches: list[Launch] = field(default_factory=list)
    results: list[ScenarioResult] = field(default_factory=list)

    def job(self, name: str) -> str:
        return f"{name}-{uuid.uuid4().hex[:6]}"

    def launch(self, job: str, run: int, args: Sequence[str] = (), *,
               nprocs: tuple[int, int] = (2, 2), pythonpath_b: Sequence[Path] = ()) -> Launch:
        placements = [Placement(self.agents["node-a"], nprocs[0]),
                      Placement(self.agents["node-b"], nprocs[1], pythonpath_b)]
        script_args = ["--data", str(self.data), "--ckpt-dir", str(self.root / job / "ckpt"),
                       *args]
        launch = Launch(job, self.root / job / f"run{run}", placements, script_args).start()
        self.launches.append(launch)
        return launch

    def debug(self, job: str) -> str:
        found = "\n".join(f"  {f.check} {f.category} ranks={f.ranks} nodes={f.nodes} "
                          f"ts={f.ts:.2f}: {f.summary}" for f in self.findings.of(job))
        logs = "\n".join(launch.log_tail(15) for launch in self.launches if launch.job == job)
        events = self.stack.worker.query(
            "SELECT rank, node, event, reason, toFloat64(ts) AS t, pid, signal, step, "
            "toFloat64(ingested_at) AS at FROM "
            f"{{database}}.rank_events WHERE job_id = '{job}' ORDER BY ts").rows
        dead = self.stack.worker.query(
            "SELECT reason, count() FROM {database}.dead_letters GROUP BY reason").rows
        return (f"findings of {job}:\n{found or '  none'}\nrank events: {events}\n"
                f"dead letters: {dead}\nworker log:\n{self.stack.worker.log_tail(15)}\n{logs}")


@pytest.fixture(scope="module")
def harness(kafka_broker, tmp_path_factory) -> Iterator[Harness]:
    if find_spec("torch") is None:
        pytest.fail("torch is not installed in this environment: run `make install-torch`")
    root = tmp_path_factory.mktemp("trainer-e2e")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with LocalStack(root / "stack", broker=kafka_broker, topic_prefix=prefix,
                    app_id=f"tg-test-{prefix}", batch_within=0.3) as stack:
        agents = {name: NodeAgent(name, root) for name in NODES}
        h = Harness(stack, agents, Findings(stack.worker), make_data(root / "data.npz"), root)
        try:
            for agent in agents.values():
                agent.start(stack.bootstrap, prefix)
            for agent in agents.values():
                agent.wait_ready()
            yield h
        finally:
            for launch in h.launches:
                launch.kill()
            for agent in agents.values():
                agent.stop()
            table = "\n".join(r.row() for r in h.results)
            header = (f"{'scenario':<22} {'check':<20} {'culprit':<18} {'latency':>8} "
                      f"{'wall':>7}  notes")
            text = f"\ntrainer e2e (event-time latency from injection, wall s):\n{header}\n{table}"
            (root / "results.txt").write_text(text)
            print(text)


@pytest.fixture
def e2e(harness: Harness) -> Iterator[Harness]:
    """The module's harness; whatever a test launched is killed when it ends."""
    before = len(harness.launches)
    try:
        yield harness
    finally:
        for launch in harness.launches[before:]:
            launch.kill()


def _expect(h: Harness, job: str, check: str, rank: int, ranks: dict[int, RankInfo],
            injected: float, limit: float, name: str, started: float,
            timeout: float = 150.0) -> Finding:
    """The finding of ``check`` names ``rank`` and its node alone, within ``limit``."""
    found = h.findings.wait_for(job, check, timeout=timeout)
    assert found is not None, f"no {check} finding\n{h.debug(job)}"
    latency = found.ts - injected
    others = sorted({f.check for f in h.findings.of(job) if f.category in PAGING} - {check})
    h.results.append(ScenarioResult(name, check, culprit(rank, ranks), latency,
                                    time.monotonic() - started,
                                    f"also: {', '.join(others)}" if others else ""))
    blamed = {(r, n) for f in h.findings.of(job) if f.check == check
              for r, n in zip(f.ranks, f.nodes, strict=False)}
    assert (found.ranks, found.nodes) == ([rank], [ranks[rank].node]), h.debug(job)
    assert blamed == {(rank, ranks[rank].node)}, h.debug(job)
    assert latency <= limit, f"{check} after {latency:.1f}s of event time\n{h.debug(job)}"
    return found


def _live_fault(h: Harness, name: str, check: str, kind: str, step: int,
                limit: float = SUBTLE_S, rank: int = 2) -> None:
    """One run whose rank ``rank`` is sabotaged by the training script from ``step`` on."""
    started = time.monotonic()
    job = h.job(kind)
    run = h.launch(job, 1, ["--fault", f"{kind}:{rank}:{step}"])
    ranks = run.ranks()
    injected = run.fault()["ts"]
    _expect(h, job, check, rank, ranks, injected, limit, name, started)
    run.finish()


#: The first run of a restart scenario saves after this step and ends at FIRST_END.
SAVE_AT, FIRST_END = 8, 11


def _first_run(h: Harness, job: str, **kw) -> Launch:
    """A job's first run: a checkpoint after step ``SAVE_AT``, then it ends cleanly."""
    run = h.launch(job, 1, ["--save-at", str(SAVE_AT), "--steps", str(FIRST_END)], **kw)
    assert run.wait() == [0, 0], run.log_tail()
    return run


def _restarted(h: Harness, job: str, args: Sequence[str] = (), **kw) -> Launch:
    """The job's second run: every rank loads its checkpoint shard of step ``SAVE_AT``."""
    return h.launch(job, 2, ["--resume", str(SAVE_AT), *args], **kw)


def _restarted_fault(h: Harness, name: str, check: str, fault: str, rank: int) -> None:
    """A job restarted from its checkpoint with ``fault`` injected by the training script."""
    started = time.monotonic()
    job = h.job(fault)
    _first_run(h, job)
    run = _restarted(h, job, ["--fault", f"{fault}:{rank}"])
    ranks = run.ranks()
    _expect(h, job, check, rank, ranks, run.fault()["ts"], SUBTLE_S, name, started)
    run.finish()


# -- sabotage ---------------------------------------------------------------------------


def test_weights_changed_in_memory_after_a_checkpoint_load_are_param_divergence(e2e):
    _restarted_fault(e2e, "weights after load", "param_divergence", "weights", 2)


def test_a_rank_reseeded_after_a_restart_is_a_seed_mismatch(e2e):
    _restarted_fault(e2e, "reseeded rank", "seed_mismatch", "seed", 1)


def test_a_checkpoint_shard_modified_on_disk_is_a_checkpoint_digest_finding(e2e):
    started = time.monotonic()
    job = e2e.job("shard")
    _first_run(e2e, job)
    injected = tamper_shard(e2e.root / job / "ckpt" / f"step{SAVE_AT}" / "rank3.pt")
    run = _restarted(e2e, job)
    _expect(e2e, job, "checkpoint_digest", 3, run.ranks(), injected, SUBTLE_S,
            "shard edited on disk", started)
    run.finish()


def test_a_framework_file_edited_on_one_node_is_a_code_fingerprint_naming_the_file(e2e):
    started = time.monotonic()
    job = e2e.job("code")
    # Node B runs one rank on a torch tree of its own (its files links to the shared
    # install's), so node A's three ranks are the majority of the restarted job.
    own_torch = mirror_torch(e2e.root / job / "node-b-site")
    layout = {"nprocs": (3, 1), "pythonpath_b": [own_torch]}
    _first_run(e2e, job, **layout)
    edited = edit_framework_file(own_torch, "optim/sgd.py")
    injected = os.stat(edited).st_mtime
    run = _restarted(e2e, job, **layout)
    ranks = run.ranks()
    [rank_b] = [r for r, info in ranks.items() if info.node == "node-b"]
    found = _expect(e2e, job, "code_fingerprint", rank_b, ranks, injected, SUBTLE_S,
                    "torch file edited on B", started)
    assert "torch:optim/sgd.py" in found.summary, e2e.debug(job)
    assert "torch:optim/sgd.py" in found.evidence, e2e.debug(job)
    run.finish()


def test_one_ranks_lr_changed_in_its_optimizer_is_an_lr_mismatch(e2e):
    _live_fault(e2e, "lr x1.5", "lr_mismatch", "lr", 6)


def test_one_ranks_scaled_gradients_are_a_local_grad_outlier(e2e):
    _live_fault(e2e, "gradients x4", "local_grad_outlier", "grad", 6)


def test_one_rank_slowed_by_a_quarter_is_a_straggler(e2e):
    _live_fault(e2e, "rank slowed 25 %", "straggler", "slow", 6)


def test_a_sigkilled_rank_is_rank_exited_within_10s(e2e):
    started = time.monotonic()
    job = e2e.job("sigkill")
    run = e2e.launch(job, 1)
    ranks = run.ranks()
    victim = pick_rank(ranks, "node-b")
    run.wait_step(6, rank=victim)
    os.kill(ranks[victim].pid, signal.SIGKILL)
    injected = time.time()
    _expect(e2e, job, "rank_exited", victim, ranks, injected, HARD_S, "SIGKILL", started,
            timeout=60)


def test_a_sigstopped_rank_is_rank_hung_within_10s(e2e):
    started = time.monotonic()
    job = e2e.job("sigstop")
    run = e2e.launch(job, 1)
    ranks = run.ranks()
    victim = pick_rank(ranks, "node-b")
    run.wait_step(6, rank=victim)
    os.kill(ranks[victim].pid, signal.SIGSTOP)
    injected = time.time()
    try:
        _expect(e2e, job, "rank_hung", victim, ranks, injected, HARD_S, "SIGSTOP", started,
                timeout=60)
    finally:
        os.kill(ranks[victim].pid, signal.SIGCONT)
        run.kill()


def test_a_sharded_job_agrees_shard_by_shard_until_one_replica_is_tampered(e2e):
    started = time.monotonic()
    job = e2e.job("hsdp")
    # FSDP2 over a (3 replicas, 2 shards) mesh: ranks 0, 2, 4 hold shard 0, ranks 1, 3, 5
    # shard 1. Their checksums differ across shards by design: no param_divergence until
    # rank 3's copy of shard 1 is changed.
    run = e2e.launch(job, 1, ["--hsdp", "3", "--fault", "tamper:3:12"], nprocs=(3, 3))
    ranks = run.ranks()
    injected = run.fault()["ts"]
    _expect(e2e, job, "param_divergence", 3, ranks, injected, SUBTLE_S, "HSDP replica edited",
            started)
    shards = dict(e2e.stack.worker.query(
        "SELECT rank, any(shard) FROM {database}.steps "
        f"WHERE job_id = '{job}' GROUP BY rank ORDER BY rank").rows)
    assert shards == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0, 5: 1}
    run.finish()


# -- benign -----------------------------------------------------------------------------


def test_schedule_eval_clean_restart_and_elastic_restart_raise_nothing(e2e):
    started = time.monotonic()
    job = e2e.job("benign")
    common = ["--schedule", "warmup-decay", "--eval-every", "10"]
    first = e2e.launch(job, 1, [*common, "--save-at", "12", "--steps", "16"])
    assert first.wait() == [0, 0], first.log_tail()
    # A clean restart from the checkpoint of step 12 (the job had reached 16)...
    second = e2e.launch(job, 2, [*common, "--resume", "12", "--save-at", "24"])
    second.wait_step(27)
    # ...then the job is stopped (SIGTERM to both torchruns) and restarted elastically
    # with half the world size from the checkpoint of step 24.
    second.terminate()
    second.wait(timeout=60)
    third = e2e.launch(job, 3, [*common, "--resume", "24", "--steps", "40"], nprocs=(1, 1))
    assert third.wait() == [0, 0], third.log_tail()
    e2e.findings.settle(NODES, after=time.time() + 6)
    loud = [f for f in e2e.findings.of(job) if f.category in PAGING]
    quiet = sorted({f.check for f in e2e.findings.of(job)} - {f.check for f in loud})
    e2e.results.append(ScenarioResult("benign lifecycle", "-", "-", None,
                                      time.monotonic() - started,
                                      f"non-paging: {', '.join(quiet)}" if quiet else ""))
    assert loud == [], e2e.debug(job)
