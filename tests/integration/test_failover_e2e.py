"""Two workers in one consumer group; one is SIGKILLed mid-run and the other takes over.

Two simulated jobs run sabotages whose detection needs what was seen *before* the kill:
``job_code_change`` (a restart under new code: ``code_changed`` compares the restarted
ranks with the job's pre-restart history) and ``checkpoint_corruption`` (the load after
the restart is compared with the digests saved before it). The worker owning the first job
is killed after its state snapshot holds the pre-restart history and before the restart;
the survivor takes its partitions over (after the session timeout), restores the
detector and consistency state, and must still name both culprits.

"Exactly once" on the findings topic, precisely: for every (job, check, culprits) there
is exactly one ``finding_id``; every message of one ``finding_id`` carries the same
finding (first seen, check, ranks, nodes) at event times that are either equal (a batch
replayed after the kill: at-least-once, collapsed by the ``findings`` table's
``ReplacingMergeTree`` and by the alert job, which keys on the finding's fingerprint) or
at least ``repeat_s`` apart (a persisting fault's re-emission); and the scorecard finds
no false alarm.

Each worker writes its own embedded store (a chdb directory has one owner); with
``TRAINGUARD_TEST_CLICKHOUSE_URL`` both write one database on that server. The test
only uses the workers' external behaviour: processes, topics and their stores.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from trainguard import envvars
from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.sim import JobSimulator, JobSpec, make_scenario
from trainguard.agents.sim.scenario import Scenario
from trainguard.agents.transport import KafkaTransport
from trainguard.evaluation.scorecard import score_run
from trainguard.local.stack import LocalStack
from trainguard.local.worker import WorkerProcess
from trainguard.pipeline.consistency import ConsistencyConfig
from trainguard.pipeline.store import Secret, StoreUrl
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Finding

pytestmark = pytest.mark.integration

TICKS = 110
#: Both sabotages restart the job at tick 60 (10 s down); saves every 25 steps (25, 50).
PARAMS = {"at": 60, "down_s": 10, "checkpoint_every": 25}
#: Killed after this tick: past the save at 50 and the last pre-restart step. A worker
#: starting these jobs from nothing here finds neither sabotage (see module doc).
KILL_AFTER = 62
SCENARIOS = ("job_code_change", "checkpoint_corruption")
SAMPLES = "SELECT count() FROM {database}.sample_batches FINAL"


def _store(tmp_path: Path, name: str) -> str | StoreUrl:
    raw = os.environ.get(envvars.TEST_CLICKHOUSE_URL)
    if not raw:
        return f"chdb://{tmp_path / name}"
    password = os.environ.get(envvars.CLICKHOUSE_PASSWORD)
    url = StoreUrl.parse(raw, Secret(password) if password else None)
    return replace(url, database=f"tg_failover_{tmp_path.name[-12:].replace('-', '_')}")


@pytest.fixture
def workers(local_stack: LocalStack, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """The stack's worker and a second one in its consumer group, each with its store."""
    first = local_stack.worker
    store = _store(tmp_path, "store")
    shared = not isinstance(store, str)
    if shared:  # both write the one server database
        first.store_arg, first.url = str(store), store
    second = WorkerProcess(
        first.bootstrap, store if shared else _store(tmp_path, "store-b"),
        topic_prefix=first.prefix, data_dir=tmp_path / "worker-b",
        log_path=tmp_path / "logs" / "worker-b.log", app_id=first.app_id,
        batch_within=first.batch_within)
    try:
        yield [first, second]
    finally:
        second.kill()


def _jobs(prefix: str, t0: float) -> list[tuple[Scenario, JobSimulator]]:
    out = []
    for i, name in enumerate(SCENARIOS):
        spec = JobSpec(job_id=f"{prefix}-job{i}", cluster="fo", nodes=2, gpus_per_node=4,
                       node_prefix=f"{prefix}-n{i}")
        scenario = make_scenario(name, spec, seed=1, **PARAMS)
        out.append((scenario, JobSimulator(spec, scenario, seed=1, start_ts=t0)))
    return out


def _assignments(worker: WorkerProcess) -> list[set[str]]:
    """The input partitions of each assignment the worker logged, oldest first."""
    marker = "state assigned partitions="
    return [set(line.rsplit("keys=", 1)[1].rstrip("\"").split(",")) - {""}
            for line in worker.log_path.read_text().splitlines() if marker in line]


def _assigned(worker: WorkerProcess, times: int, timeout: float = 120.0) -> set[str]:
    """Wait until the worker logged ``times`` assignments; the partitions of the last."""
    deadline = time.monotonic() + timeout
    while len(seen := _assignments(worker)) < times:
        worker.check_alive()
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.5)
    return seen[-1]


def _partition_of(key: bytes, partitions: int) -> int:
    """The partition the agents' producer (kafka-python's default partitioner) picks."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _findings(bootstrap: str, topic: str) -> list[Finding]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000,
                             client_id=f"tg-fo-{uuid.uuid4().hex[:6]}")
    decoder = RecordDecoder(Finding)
    try:
        return [decoder.decode(m.value) for m in consumer]
    finally:
        consumer.close()


def test_a_killed_workers_jobs_resume_on_the_survivor_with_every_finding_once(
        local_stack: LocalStack, workers: list[WorkerProcess]) -> None:
    first, second = workers
    first.start()
    _assigned(first, 1)
    second.start()
    _assigned(second, 1)
    _assigned(first, 2)  # the rebalance that shared the partitions
    shared = first.store_arg == second.store_arg
    transport = KafkaTransport(KafkaProducerSettings(bootstrap=local_stack.bootstrap))
    topics = local_stack.topics
    names = {"samples": topics.samples, "steps": topics.steps,
             "heartbeats": topics.heartbeats}
    t0 = time.time() - TICKS - 120  # event time in the recent past: inside the ingest window
    jobs = _jobs(first.prefix, t0)
    nodes = sum(sim.spec.nodes for _, sim in jobs)

    def stored(alive: list[WorkerProcess]) -> int:
        counts = [w.scalar(SAMPLES) for w in alive]
        return max(counts) if shared else sum(counts)

    def play(start: int, stop: int, alive: list[WorkerProcess] | None = None) -> None:
        for _ in range(start, stop):
            for _, sim in jobs:
                for e in sim.tick():
                    transport.send(names[e.topic], e.key, encode(e.record))
        transport.flush(timeout=30)
        deadline = time.monotonic() + 90
        while alive is not None and stored(alive) < stop * nodes:
            assert time.monotonic() < deadline, [w.log_tail() for w in alive]
            time.sleep(0.5)

    play(0, KILL_AFTER - 1, workers)
    time.sleep(6)  # past state_every_s: the next batch writes a snapshot
    play(KILL_AFTER - 1, KILL_AFTER, workers)
    time.sleep(2)
    steps_part = _partition_of(jobs[0][1].spec.job_id.encode(), local_stack.partitions)
    owns = [f"{topics.steps}:{steps_part}" in _assignments(w)[-1] for w in workers]
    assert sum(owns) == 1, [_assignments(w)[-1] for w in workers]
    victim, survivor = (first, second) if owns[0] else (second, first)
    stored_before = stored([survivor])
    assignments = len(_assignments(survivor))
    victim.kill()
    play(KILL_AFTER, TICKS)
    transport.close(timeout=30)
    took_over = _assigned(survivor, assignments + 1)
    assert f"{topics.steps}:{steps_part}" in took_over
    # The survivor stores every batch of the run's rest (and replays what the victim did
    # not commit).
    expected = TICKS * nodes if shared else stored_before + (TICKS - KILL_AFTER) * nodes
    assert survivor.wait_for(SAMPLES, expected, timeout=120) >= expected, survivor.log_tail()
    time.sleep(3)  # the last findings land

    assert "baseline state restored partition=" in survivor.log_tail(400)
    found = _findings(local_stack.bootstrap, topics.findings)
    for scenario, sim in jobs:
        rows = [msgspec.to_builtins(f) for f in found if f.job_id == sim.spec.job_id]
        exp = scenario.expected()
        result = score_run(scenario.name, "sabotage", 1, exp, rows)
        assert result.detected and not result.false_alerts, (
            scenario.name, result.false_alerts,
            [(r["check"], r["ts"] - t0, r["first_seen"] - t0,
              {k: v - t0 if isinstance(v, float) and v > t0 else v
               for k, v in r["evidence"].items()}) for r in rows])
        # The checks that need the pre-kill state fired (param_divergence needs none).
        assert set(result.checks_fired) >= exp.checks - {"param_divergence"}, result
    _assert_each_finding_once(found)


def _assert_each_finding_once(found: list[Finding]) -> None:
    repeat_s = ConsistencyConfig().repeat_s
    by_id: dict[str, list[Finding]] = defaultdict(list)
    ids_per_fault: dict[tuple[object, ...], set[str]] = defaultdict(set)
    for f in found:
        if f.cleared_at is not None:
            continue  # a clearing names the same id again by design
        by_id[f.finding_id].append(f)
        ids_per_fault[f.job_id, f.check, tuple(f.ranks), tuple(f.nodes)].add(f.finding_id)
    assert all(len(ids) == 1 for ids in ids_per_fault.values()), ids_per_fault
    for fid, same in by_id.items():
        assert len({(f.first_seen, f.check, tuple(f.ranks), tuple(f.nodes))
                    for f in same}) == 1, (fid, same)
        times = sorted({f.ts for f in same})
        assert all(b - a >= repeat_s for a, b in zip(times, times[1:], strict=False)), (
            fid, times)
