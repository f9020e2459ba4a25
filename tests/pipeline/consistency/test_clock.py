"""Per-node clock skew: measured against Kafka's timestamps, reported, and absorbed."""

import pytest

from tests.pipeline.consistency.helpers import T0, FakeJob, first
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.schemas.records import Finding, Record

SKEWED = "node-02"


def _gone(job: FakeJob, t: int, gone_at: int | None):
    """Every GPU runs one process; GPU 3 of node-02 loses it (its rank killed) at gone_at."""
    out = {}
    for n in job.nodes:
        for g in range(job.gpus):
            killed = gone_at is not None and t >= gone_at and (n, g) == (SKEWED, 3)
            out[(n, g)] = {"compute_procs": 0, "util_gpu_pct": 0.0} if killed else \
                {"compute_procs": 1}
    return out


def _run(skew: float, ticks: int = 30, gone_at: int | None = 20, speed: float = 1.0,
         split: bool = False) -> list[Finding]:
    """A 4-node job at 1 Hz; node-02's clock is ``skew`` s off. Kafka stamps each message
    when it is sent: at real time, or ``speed`` times slower than event time (a replay)."""
    job = FakeJob(32, seed=3)
    stage = ConsistencyStage()
    found: list[Finding] = []
    for t in range(1, ticks + 1):
        sent = T0 + t / speed
        records: list[Record] = []
        broker: list[float | None] = []
        delay = {r: skew for r in range(job.ranks) if job.node(r) == SKEWED}
        for b in job.step(t, T0 + t, delay=delay):
            records.append(b)
            broker.append(sent + 0.2)
        for b in job.samples(T0 + t + 0.5, over=_gone(job, t, gone_at)):
            off = skew if b.node == SKEWED else 0.0
            records.append(b.__class__(**{**{f: getattr(b, f) for f in b.__struct_fields__},
                                          "ts": b.ts + off}))
            broker.append(sent + 0.5)
        if split:  # a batch boundary between node-00's sample batch and its peers'
            found += stage.observe(records[:5], broker[:5])
            found += stage.observe(records[5:], broker[5:])
        else:
            found += stage.observe(records, broker)
    found += stage.flush(stage.watermark + stage.config.wait_s)
    return found


@pytest.mark.parametrize("skew", [5.0, -5.0])
def test_a_node_skewed_by_5_s_raises_clock_skew_and_its_killed_rank_is_still_judged(skew):
    found = first(_run(skew))
    (clock,) = [f for f in found if f.check == "clock_skew"]
    assert (clock.nodes, clock.category) == ([SKEWED], "hardware")
    assert clock.evidence["skew_s"] == pytest.approx(skew, abs=0.05)
    idle = [f for f in found if f.check == "node_idle"]
    assert [(f.nodes, f.gpu_index, f.ranks) for f in idle] == [([SKEWED], 3, [19])]
    # Judged on its first sample without a process, on the job's clock (the fast path).
    assert idle[0].evidence["samples"] == 1 and idle[0].first_seen == T0 + 20.5
    others = {f.check for f in found} - {"clock_skew", "node_idle"}
    assert others == set()


def test_a_node_within_the_tolerance_raises_nothing_and_its_killed_rank_is_judged():
    found = first(_run(1.0))
    assert [(f.check, f.nodes, f.gpu_index) for f in found] == [("node_idle", [SKEWED], 3)]
    assert found[0].evidence["samples"] == 1


def test_a_skewed_node_without_a_fault_raises_only_clock_skew():
    assert [(f.check, f.nodes) for f in first(_run(5.0, gone_at=None))] == [
        ("clock_skew", [SKEWED])]


@pytest.mark.parametrize("speed", [4.0, 12.0, 40.0])
def test_a_replay_faster_than_kafka_time_raises_no_clock_skew(speed):
    assert first(_run(0.0, ticks=60, gone_at=None, speed=speed, split=True)) == []
