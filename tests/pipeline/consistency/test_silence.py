"""agent_silent: a node running a job whose agent stops heartbeating pages within 10 s."""

from __future__ import annotations

import pytest

from tests.pipeline.consistency.helpers import T0, FakeJob
from trainguard.errors import ConfigError
from trainguard.pipeline.alerts import AlertLifecycle
from trainguard.pipeline.batches import _by_job
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.pipeline.store import StoreUrl
from trainguard.schemas.records import Finding, GpuSampleBatch, Heartbeat, Record


class Clock:
    """The wall clock, moved by the test."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def hb(node: str, ts: float, job: str | None = "job-a", agent: str | None = None,
       uptime: float | None = None) -> Heartbeat:
    return Heartbeat(cluster="c1", node=node, ts=ts, seq=int(ts - T0), agent_id=agent or
                     f"agent-{node}", agent_version="t", uptime_s=uptime if uptime is not None
                     else ts - T0 + 100, backend="simulated", gpu_count=8, job_id=job)


def tick(job: FakeJob, t: int, nodes: list[str], *, steps: bool = True) -> list[Record]:
    """One second of a job's nodes: samples, steps and (every 5 s) heartbeats."""
    ts = T0 + t
    out: list[Record] = list(job.samples(ts, nodes=nodes))
    if steps:
        ranks = [r for r in range(job.ranks) if job.node(r) in nodes]
        out += job.step(t, ts, ranks=ranks)
    if t % 5 == 0:
        out += [hb(n, ts, job.job_id) for n in nodes]
    return out


def run(stage: ConsistencyStage, clock: Clock, ticks: range,
        emit: dict[int, list[Record]]) -> dict[int, list[Finding]]:
    """Feed each tick's records and flush after it; the agent_silent findings per tick."""
    found: dict[int, list[Finding]] = {}
    for t in ticks:
        clock.t = T0 + t
        out = stage.observe(emit.get(t, [])) + stage.flush()
        silent = [f for f in out if f.check == "agent_silent"]
        if silent:
            found[t] = silent
    return found


def _one_node_stops(stop_after: int = 10, until: int = 40, back_at: int | None = None):
    job, clock = FakeJob(16, gpus=8, noise=False), Clock()
    stage = ConsistencyStage(clock=clock)
    emit = {}
    for t in range(until):
        up = t <= stop_after or (back_at is not None and t >= back_at)
        emit[t] = tick(job, t, ["node-00", "node-01"] if up else ["node-00"])
    return stage, run(stage, clock, range(until), emit)


def test_a_node_whose_agent_stops_pages_within_ten_seconds_of_its_last_heartbeat():
    stage, found = _one_node_stops()
    # Last heartbeat at T0+10; the job's other node moves the job's time on.
    assert list(found) == [19]  # decided once 8 s passed (the first tick beyond)
    [f] = found[19]
    assert (f.category, f.nodes, f.job_id, f.cluster) == ("availability", ["node-01"], "job-a",
                                                          "c1")
    assert f.ts == T0 + 18 and f.first_seen == T0 + 10 and f.ts - (T0 + 10) <= 10
    assert f.ranks == list(range(8, 16)) and f.cleared_at is None
    assert f.evidence["agent_id"] == "agent-node-01" and f.evidence["last_heartbeat_ts"] == T0 + 10
    assert "node-01" in f.summary and "job-a" in f.summary


def test_the_page_goes_through_the_alert_lifecycle_as_a_page():
    _, found = _one_node_stops()
    [alert] = AlertLifecycle().observe_findings(found[19])
    assert (alert.status, alert.severity, alert.check, alert.node) == (
        "firing", "page", "agent_silent", "node-01")
    assert alert.labels["category"] == "availability"


def test_it_clears_when_the_heartbeats_come_back():
    _, found = _one_node_stops(back_at=30, until=35)
    assert list(found) == [19, 30]
    fired, cleared = found[19][0], found[30][0]
    assert cleared.finding_id == fired.finding_id and cleared.cleared_at == T0 + 30


def test_a_persisting_silence_is_repeated_every_repeat_s():
    _, found = _one_node_stops(until=90)
    assert list(found) == [19, 78]  # on a repeat_s (60 s) grid from the decision at T0+18
    assert found[78][0].finding_id == found[19][0].finding_id
    assert found[78][0].last_seen == T0 + 78 and found[78][0].ts == T0 + 18


def test_a_node_alone_in_its_job_is_judged_on_the_wall_clock_while_input_flows():
    # Job A runs on one node only; its records stop entirely at T0+10. Another job's node
    # keeps sending: the pipeline is live, so A's node time moves on with the wall clock.
    a, clock = FakeJob(8, gpus=8, job_id="job-a", noise=False), Clock()
    stage = ConsistencyStage(clock=clock)
    emit = {t: (tick(a, t, ["node-00"]) if t <= 10 else []) + [hb("b-00", T0 + t, "job-b")]
            for t in range(30)}
    found = run(stage, clock, range(30), emit)
    assert list(found) == [19]
    assert found[19][0].nodes == ["node-00"] and found[19][0].ts == T0 + 18


def test_nothing_pages_when_the_whole_input_stops():
    # A Kafka outage, a stalled consumer, the end of a replay: nobody's time moves.
    a, clock = FakeJob(16, gpus=8, noise=False), Clock()
    stage = ConsistencyStage(clock=clock)
    emit = {t: tick(a, t, ["node-00", "node-01"]) for t in range(11)}
    found = run(stage, clock, range(200), emit)
    assert found == {}


def test_an_idle_nodes_agent_stopping_pages_nothing():
    a, clock = FakeJob(16, gpus=8, noise=False), Clock()
    stage = ConsistencyStage(clock=clock)
    emit: dict[int, list[Record]] = {}
    for t in range(40):
        emit[t] = tick(a, t, ["node-00"])
        if t <= 10:  # node-01 runs no job: its samples and heartbeats name none
            emit[t] += [GpuSampleBatch(cluster="c1", node="node-01", ts=T0 + t, seq=t,
                                       agent_id="agent-node-01", gpus=[], job_id=None)]
            if t % 5 == 0:
                emit[t].append(hb("node-01", T0 + t, None))
    assert run(stage, clock, range(40), emit) == {}


def test_an_agent_restart_mid_job_is_counted_not_paged():
    a, clock = FakeJob(16, gpus=8, noise=False), Clock()
    stage = ConsistencyStage(clock=clock)
    emit = {t: tick(a, t, ["node-00", "node-01"]) for t in range(20)}
    # node-01's agent restarts at T0+12: a new id, its uptime starting over.
    emit[12] = emit[12] + [hb("node-01", T0 + 12, None, agent="agent-new", uptime=1.0)]
    emit[15] = [r for r in emit[15] if not isinstance(r, Heartbeat) or r.node != "node-01"]
    emit[15].append(hb("node-01", T0 + 15, "job-a", agent="agent-new", uptime=4.0))
    found = run(stage, clock, range(20), emit)
    assert found == {}
    assert stage.stats()["agent_restarts"] == 1


def test_an_explicit_event_time_judges_every_node():
    a, clock = FakeJob(16, gpus=8, noise=False), Clock()
    stage = ConsistencyStage(clock=clock)
    stage.observe(tick(a, 0, ["node-00", "node-01"]))
    assert [f for f in stage.flush(T0 + 8) if f.check == "agent_silent"] == []
    assert sorted(f.nodes[0] for f in stage.flush(T0 + 9)
                  if f.check == "agent_silent") == ["node-00", "node-01"]


def test_the_silence_threshold_is_configurable():
    a, clock = FakeJob(16, gpus=8, noise=False), Clock()
    stage = ConsistencyStage(ConsistencyConfig(agent_silent_s=3.0), clock=clock)
    stage.observe(tick(a, 0, ["node-00"]))
    assert [f.ts for f in stage.flush(T0 + 4) if f.check == "agent_silent"] == [T0 + 3]


def test_heartbeats_and_idle_nodes_samples_reach_the_stage_under_no_job():
    beat, idle = hb("n1", T0, None), GpuSampleBatch(cluster="c1", node="n2", ts=T0, seq=0,
                                                    agent_id="a", gpus=[])
    assert _by_job([beat, idle, hb("n3", T0, "job-a")]) == {"": [0, 1], "job-a": [2]}


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_the_threshold_must_be_positive(value):
    with pytest.raises(ConfigError, match="agent_silent_s"):
        ConsistencyConfig(agent_silent_s=value)
    with pytest.raises(ConfigError, match="agent_silent_s"):
        WorkerConfig(bootstrap="127.0.0.1:9092", store=StoreUrl.parse("chdb:///tmp/x"),
                     agent_silent_s=value)
