"""The job-wide sabotage scenarios: every rank changed alike, found by job_shift alone."""

import math

import pytest

from tests.agents.sim.util import by_ts, mean, replicas_agree
from trainguard.agents.sim import JobSimulator, JobSpec, make_scenario
from trainguard.pipeline.consistency import ConsistencyStage

SPEC = JobSpec(nodes=4, gpus_per_node=4)  # as `trainguard eval` runs them
AT = 150


def simulate(name, ticks=AT + 100, seed=0, **params):
    scenario = make_scenario(name, SPEC, seed, at=AT, **params)
    sim = JobSimulator(SPEC, scenario, seed=seed)
    return scenario, sim.run(ticks)


def through_stage(name, seed=0, ticks=330, **params):
    """The scenario's records through the consistency stage; every finding emitted."""
    scenario = make_scenario(name, SPEC, seed, **params)
    sim = JobSimulator(SPEC, scenario, seed=seed)
    now = [sim.start_ts]
    stage = ConsistencyStage(clock=lambda: now[0])
    found = []
    for t in range(ticks):
        records = [e.record for e in sim.tick()]
        now[0] = sim.start_ts + t
        found += stage.observe(records)
    found += stage.flush(now[0] + 5)
    return scenario, found


def around(emits, field):
    """Mean of ``field`` over every rank, before ``AT`` and from AT + 60 on.

    The loss is taken relative to the simulator's falling curve, so the two compare.
    """
    ticks = by_ts(emits)
    t0 = min(ticks)

    def value(r):
        v = getattr(r, field)
        return v / (2.0 + 6.0 * math.exp(-r.step / 2000.0)) if field == "loss" else v

    before = [value(r) for ts, rs in ticks.items() if ts < t0 + AT for r in rs]
    after = [value(r) for ts, rs in ticks.items() if ts >= t0 + AT + 60 for r in rs]
    return mean(before), mean(after)


def test_job_lr_change_scales_every_ranks_lr_and_replicas_still_agree():
    _, emits = simulate("job_lr_change")
    ticks = by_ts(emits)
    t0 = min(ticks)
    for ts, records in ticks.items():
        factor = 3.0 if ts >= t0 + AT else 1.0
        assert [r.lr / SPEC.lr_at(r.step) for r in records] == pytest.approx(
            [factor] * len(records))
        assert replicas_agree(records)
    before, after = around(emits, "loss")
    assert after / before == pytest.approx(1 + 0.01 * math.log(3.0), abs=0.004)


def test_job_poison_raises_every_ranks_loss_alike():
    _, emits = simulate("job_poison", loss_increase=0.2)
    before, after = around(emits, "loss")
    assert after / before == pytest.approx(1.2, abs=0.01)


def test_job_slowdown_slows_every_rank_alike():
    _, emits = simulate("job_slowdown", factor=1.5)
    before, after = around(emits, "compute_time_s")
    assert after / before == pytest.approx(1.5, rel=0.02)


@pytest.mark.parametrize("name", ["job_lr_change", "job_poison", "job_slowdown"])
def test_job_wide_sabotage_blames_the_job(name):
    e = make_scenario(name, SPEC, 0).expected()
    assert e.job_wide and e.checks == {"job_shift"} and e.severity == "subtle"
    assert e.culprit_ranks == set(range(SPEC.world_size))


@pytest.mark.parametrize("bad", [{"lr_factor": 1.0}, {"lr_factor": -2.0},
                                 {"loss_response": -1.0}, {"response_s": -1}])
def test_job_lr_change_rejects_bad_parameters(bad):
    with pytest.raises(ValueError, match="job_lr_change: "):
        make_scenario("job_lr_change", SPEC, **bad)


@pytest.mark.parametrize("name, metrics", [
    ("job_lr_change", {"lr"}), ("job_poison", {"loss"}),
    ("job_slowdown", {"step_time", "tokens_per_s"}),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_job_wide_sabotage_is_a_job_shift_within_120_s(name, metrics, seed):
    scenario, found = through_stage(name, seed)
    start = scenario.expected().starts_at_ts
    shifts = {f.evidence["metric"]: f for f in found if f.check == "job_shift"}
    assert metrics <= set(shifts)
    for metric in metrics:
        f = shifts[metric]
        assert f.ranks == [] and f.nodes == [] and f.category != "info"
        assert 0 <= f.ts - start <= 120
    assert not [f for f in found if f.category in ("integrity", "availability")
                and f.check != "job_shift"]


@pytest.mark.parametrize("name", [
    "lr_schedule", "eval_phase", "checkpoint_pause", "clean_restart", "job_resize",
    "thermal_throttle", "gradient_corruption", "node_slowdown", "poisoned_data",
    "optimizer_tamper", "kill",
])
def test_benign_and_one_rank_scenarios_raise_no_job_shift(name):
    _, found = through_stage(name, seed=1)
    assert [f.summary for f in found if f.check == "job_shift"] == []
