"""Job-wide sabotage at a restart: every rank changed alike after the load, and its truth.

Each scenario is also run through the consistency stage (no broker): its check must name
the job (no rank, no node), and ``clean_restart`` must raise none of the restart checks.
"""

from __future__ import annotations

import pytest

from tests.agents.sim.util import by_ts
from trainguard.agents.sim import JobSimulator, JobSpec, make_scenario
from trainguard.agents.sim.scenario import Scenario
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.schemas.records import Finding, StepRecord

SPEC = JobSpec(nodes=3, gpus_per_node=4)
AT = 60
TICKS = 150


def simulate(name: str, **params: object) -> tuple[Scenario, list[StepRecord], list[Finding]]:
    scenario = make_scenario(name, SPEC, 7, at=AT, checkpoint_every=30, **params)
    sim = JobSimulator(SPEC, scenario, seed=1)
    stage = ConsistencyStage()
    emitted, found = [], []
    for _ in range(TICKS):
        emits = sim.tick()
        emitted += emits
        found += stage.observe([e.record for e in emits])
    found += stage.flush(stage.watermark + stage.config.wait_s)
    after = [r for ts, recs in by_ts(emitted).items() if ts > scenario.ts_of(scenario.load_tick)
             for r in recs]
    return scenario, after, found


def _before_after(name: str, field: str, **params: object) -> tuple[set[object], set[object]]:
    scenario, after, _ = simulate(name, **params)
    sim = JobSimulator(SPEC, make_scenario(name, SPEC, 7, at=AT, checkpoint_every=30),
                       seed=1)
    before = [r for ts, recs in by_ts(sim.run(AT)).items() for r in recs]
    return {getattr(r, field) for r in before}, {getattr(r, field) for r in after}


@pytest.mark.parametrize(("name", "field"), [
    ("job_code_change", "env_fingerprint"), ("job_reseed_restart", "seed_fingerprint"),
])
def test_every_rank_resumes_with_one_new_fingerprint(name: str, field: str) -> None:
    before, after = _before_after(name, field)
    assert len(before) == 1 and len(after) == 1 and before != after


def test_job_lr_restart_scales_every_rank_alike_and_replicas_still_agree() -> None:
    scenario, after, _ = simulate("job_lr_restart", lr_factor=2.0)
    assert after and all(r.lr == pytest.approx(2.0 * SPEC.lr_at(r.step)) for r in after)
    by_step: dict[int, set[str | None]] = {}
    for r in after:
        by_step.setdefault(r.step, set()).add(r.param_checksum)
    assert all(len(v) == 1 for v in by_step.values())


@pytest.mark.parametrize(("name", "check"), [
    ("job_code_change", "code_changed"), ("job_lr_restart", "restart_divergence"),
    ("job_reseed_restart", "restart_divergence"),
])
def test_the_stage_finds_each_one_naming_the_job_soon_after_the_load(name: str,
                                                                      check: str) -> None:
    scenario, _, found = simulate(name)
    truth = scenario.expected()
    assert truth.job_wide and truth.checks == {check} and truth.severity == "hard"
    assert truth.culprit_ranks == set(range(SPEC.world_size))
    hits = [f for f in found if f.check == check]
    assert hits and all(f.ranks == [] and f.nodes == [] for f in hits)
    assert hits[0].ts - truth.starts_at_ts <= 10.0
    assert {f.check for f in found} == {check}  # nothing else fires


def test_a_clean_restart_raises_no_restart_check() -> None:
    _, _, found = simulate("clean_restart")
    assert [f for f in found if f.check in ("code_changed", "restart_divergence")] == []


def test_lr_factor_must_change_the_lr() -> None:
    with pytest.raises(ValueError, match="lr_factor must be > 0 and != 1, got 1.0"):
        make_scenario("job_lr_restart", SPEC, 0, lr_factor=1.0)
