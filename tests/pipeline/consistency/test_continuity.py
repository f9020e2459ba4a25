"""Restart continuity: a resumed job is compared with its own record from before the restart.

A job of 8 ranks runs steps 1..120, restarts (every rank's step number goes back to 101,
as a resume from the checkpoint at step 100 does, or every rank loads a checkpoint) and
runs on; what every rank reports after the restart is changed alike, so no peer
comparison can see it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from msgspec.structs import replace

from tests.pipeline.consistency.helpers import T0, FakeJob, feed, first
from trainguard.errors import ConfigError
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.pipeline.consistency.history import job_median, majority
from trainguard.schemas.ranks import EnvManifest
from trainguard.schemas.records import Finding, Record, StepBatch

RANKS = 8
GAP_S = 20.0
NEW_CHECKS = ("code_changed", "restart_divergence")


def warmup(s: int) -> float:
    """A linear warmup to 3e-4 over 1,000 steps: lr is a function of the step."""
    return 3e-4 * min(1.0, s / 1000)


def steps(job: FakeJob, numbers: Iterable[int], t0: float, rng: random.Random, *,
          lr: Callable[[int], float] = warmup, loss_shift: float = 0.0,
          grad_shift: float = 0.0, trend: float = 0.0, **fields: Any) -> list[list[StepBatch]]:
    """One group of batches per step, at ``t0``, ``t0 + 1``, ... with the job's noise."""
    out = []
    for i, s in enumerate(numbers):
        grad = round(1.25 * (1 + 0.02 * rng.gauss(0, 1)) * (1 + grad_shift), 6)
        over = {r: {"lr": lr(s), "grad_norm": grad,
                    "loss": 2.0 * (1 - trend * s) * (1 + 0.03 * rng.gauss(0, 1)) * (1 + loss_shift),
                    **fields}
                for r in range(RANKS)}
        out.append(job.step(s, t0 + i, over=over))
    return out


def restarted(*, after: range = range(101, 151), config: ConsistencyConfig | None = None,
              seed: int = 3, loads: bool = False, before: dict[str, Any] | None = None,
              **changed: Any) -> list[Finding]:
    """Steps 1..120, a restart, then ``after`` with ``changed``; every finding emitted."""
    job, rng = FakeJob(RANKS, gpus=4, seed=seed), random.Random(seed)
    groups: list[list[Record]] = [list(b) for b in steps(job, range(1, 121), T0 + 1, rng,
                                                         **(before or {}))]
    t1 = T0 + 120 + GAP_S
    if loads:
        groups.append(list(job.checkpoint("load", "ck-120", after.start - 1, t1 - 1)))
    groups += [list(b) for b in steps(job, after, t1, rng, **changed)]
    return feed(ConsistencyStage(config or ConsistencyConfig()), groups)


def new(found: list[Finding]) -> list[Finding]:
    return [f for f in first(found) if f.check in NEW_CHECKS]


def test_a_clean_restart_is_silent():
    for seed in range(5):
        found = restarted(seed=seed)
        assert first(found) == [], [f.summary for f in first(found)]


def test_a_clean_resume_from_the_last_step_is_silent():
    assert first(restarted(after=range(121, 171), loads=True)) == []


def test_lr_scaled_on_every_rank_at_a_replayed_step_is_found_at_once_naming_the_job():
    [f] = new(restarted(lr=lambda s: 3 * warmup(s)))
    assert f.check == "restart_divergence" and f.category == "integrity"
    assert (f.ranks, f.nodes, f.step) == ([], [], 101)
    assert f.evidence["quantity"] == "lr" and f.evidence["how"] == "replayed"
    assert f.evidence["ratio"] == pytest.approx(3.0)
    assert f.evidence["before"] == pytest.approx(warmup(101))
    assert "replayed step 101" in f.summary and "x3" in f.summary


def test_lr_jump_at_a_resume_without_replayed_steps_is_found():
    [f] = new(restarted(after=range(121, 171), loads=True, lr=lambda s: 2 * warmup(s)))
    assert f.evidence["quantity"] == "lr" and f.evidence["how"] == "jump"
    assert f.step == 121 and f.evidence["ratio"] == pytest.approx(2 * 121 / 120)


def test_a_constant_lr_restarted_the_same_is_silent_and_a_changed_one_is_found():
    flat = {"lr": lambda s: 1e-4}
    assert new(restarted(after=range(121, 171), loads=True, before=flat, **flat)) == []
    [f] = new(restarted(after=range(121, 171), loads=True, before=flat,
                        lr=lambda s: 1.001e-4))
    assert f.evidence["how"] == "jump"


def test_every_rank_on_new_code_after_a_restart_is_code_changed_not_code_fingerprint():
    found = restarted(after=range(101, 201), env_fingerprint="env-0002")
    assert [f.check for f in first(found)] == ["code_changed"]
    f = first(found)[0]
    assert (f.ranks, f.nodes, f.observed, f.expected) == ([], [], "env-0002", "env-0001")
    assert (f.step, f.ts) == (101, T0 + 120 + GAP_S)  # the first step after the restart
    assert f.evidence["fingerprint"] == "env-0002" and f.evidence["previous"] == "env-0001"
    assert "trainguard change approve --job job-a --fingerprint env-0002" in f.summary
    # It persists while the job runs the new code (100 s): re-emitted, never cleared.
    assert len([g for g in found if g.finding_id == f.finding_id]) >= 2
    assert all(g.cleared_at is None for g in found)


def test_code_changed_names_the_files_that_differ_from_the_manifests():
    job, rng = FakeJob(RANKS, gpus=4, seed=1), random.Random(1)
    files = {"script:train.py": "aa" * 32, "version:torch": "2.5.1"}
    old = EnvManifest(rank=0, ts=T0, fingerprint="env-0001", entries=files)
    new_ = EnvManifest(rank=0, ts=T0, fingerprint="env-0002",
                       entries={**files, "script:train.py": "bb" * 32})
    groups: list[list[Record]] = [list(b) for b in steps(job, range(1, 121), T0 + 1, rng)]
    groups[0][0] = replace(groups[0][0], manifests=[old])
    after = steps(job, range(101, 131), T0 + 140, rng, env_fingerprint="env-0002")
    after[0][0] = replace(after[0][0], manifests=[new_])
    groups += [list(b) for b in after]
    [f] = new(feed(ConsistencyStage(), groups))
    assert f.check == "code_changed" and f.evidence["files_differ"] == "script:train.py"
    assert f.summary.endswith("differs: script:train.py")


def test_every_rank_reseeded_in_the_same_data_epoch_is_found():
    [f] = new(restarted(seed_fingerprint="seed-0002"))
    assert f.check == "restart_divergence" and f.evidence["quantity"] == "seed"
    assert (f.ranks, f.nodes) == ([], [])
    assert f.evidence["previous"] == "seed-0001" and f.evidence["fingerprint"] == "seed-0002"


def test_new_seeds_in_a_new_data_epoch_are_silent():
    found = restarted(before={"data_epoch": 0}, seed_fingerprint="seed-0002", data_epoch=1)
    assert new(found) == []


def test_a_loss_well_above_the_run_after_a_restart_is_found_after_the_window():
    [f] = new(restarted(loss_shift=0.10))
    assert f.evidence["quantity"] == "loss" and (f.ranks, f.nodes) == ([], [])
    assert f.step == 120  # the 20th replayed step: the window's verdict
    assert f.evidence["relative_change"] == pytest.approx(0.10, abs=0.03)
    assert f.evidence["z"] > 6 and f.evidence["steps_compared"] == 20


def test_a_loss_shift_within_the_noise_and_below_the_minimum_effect_is_silent():
    assert new(restarted(loss_shift=0.01)) == []


def test_a_grad_norm_shift_is_found():
    [f] = new(restarted(grad_shift=0.25))
    assert f.evidence["quantity"] == "grad_norm"
    assert f.evidence["relative_change"] == pytest.approx(0.25, abs=0.05)


def test_a_restart_into_another_world_size_compares_no_trajectory():
    job, rng = FakeJob(RANKS, gpus=4, seed=2), random.Random(2)
    groups: list[list[Record]] = [list(b) for b in steps(job, range(1, 121), T0 + 1, rng)]
    small = FakeJob(4, gpus=4, seed=2)
    for i, s in enumerate(range(101, 131)):
        over = {r: {"lr": 2 * warmup(s)} for r in range(4)}
        groups.append(list(small.step(s, T0 + 140 + i, over=over)))
    assert new(feed(ConsistencyStage(), groups)) == []


def test_pure_helpers():
    assert majority(["a", "b", "b", None]) == "b" and majority([None, None]) is None
    assert majority(["a", "b"]) == "b"  # a tie: the larger, deterministically
    assert job_median(__import__("numpy").array([1.0, float("nan"), 3.0])) == 2.0


@pytest.mark.parametrize(("fields", "message"), [
    ({"continuity_min_steps": 30}, "continuity_min_steps .* must be <= continuity_steps"),
    ({"continuity_z": 100.0}, "continuity_z must be > 0 and reachable"),
    ({"history_steps": 1}, "history_steps must be an integer >= 2"),
    ({"continuity_min_effect": -0.1}, "continuity_min_effect must be >= 0"),
])
def test_bad_continuity_config_is_refused_naming_the_value(fields, message):
    with pytest.raises(ConfigError, match=message):
        ConsistencyConfig(**fields)


def test_a_restart_after_too_few_steps_to_learn_the_noise_is_counted_unverified():
    job, rng = FakeJob(RANKS, gpus=4, seed=4), random.Random(4)
    groups: list[list[Record]] = [list(b) for b in steps(job, range(1, 6), T0 + 1, rng)]
    groups += [list(b) for b in steps(job, range(3, 40), T0 + 30, rng, loss_shift=0.5)]
    stage = ConsistencyStage()
    assert new(feed(stage, groups)) == []  # nothing to compare the loss with
    assert stage.stats()["restarts_unverified"] == 1 and stage.stats()["restarts"] == 1


def test_a_falling_loss_resumed_without_a_replay_follows_its_trend_silently():
    # 0.2 % per step: the 20 steps after the resume sit ~4 % below the last 20 before it.
    falling = {"trend": 0.002}
    assert new(restarted(after=range(121, 171), loads=True, before=falling, **falling)) == []
    [f] = new(restarted(after=range(121, 171), loads=True, before=falling, loss_shift=0.08,
                        **falling))
    assert f.evidence["quantity"] == "loss" and f.evidence["relative_change"] > 0.05


def test_a_seed_change_of_one_replica_group_names_its_ranks():
    job = FakeJob(RANKS, gpus=4, seed=5, tp=2, noise=False)

    def seeds(tp1: str) -> dict[int, dict[str, Any]]:
        return {r: {"seed_fingerprint": f"seed-tp{r % 2}" if r % 2 == 0 else tp1}
                for r in range(RANKS)}

    groups = [job.step(s, over=seeds("seed-tp1")) for s in range(1, 61)]
    groups += [job.step(s, T0 + 80 + s, over=seeds("seed-new")) for s in range(41, 70)]
    [f] = new(feed(ConsistencyStage(), groups))
    assert f.evidence["quantity"] == "seed" and f.evidence["groups_changed"] == 1
    assert f.ranks == [1, 3, 5, 7] and f.nodes == ["node-00", "node-01"]
    assert f.evidence["previous"] == "seed-tp1" and "tp 1" in f.summary


def test_a_clean_restart_early_in_training_is_silent():
    # A restart at step 11 (the CI flake of test_poison_e2e): the line through 10 steps
    # of a steep early loss curve, 20 steps ahead, is uncertain by more than the noise; a
    # z that counted only the noise called 6 of 20 seeds a divergence.
    from trainguard.agents.sim import JobSimulator, JobSpec, make_scenario

    spec = JobSpec(job_id="j", cluster="c", nodes=2, gpus_per_node=4, tp_size=2,
                   checkpoint_every=10, checkpoint_pause_s=1, warmup_steps=3)
    fired = []
    for seed in range(20):
        sim = JobSimulator(spec, make_scenario("clean_restart", spec, seed=seed, at=12,
                                               checkpoint_every=10), seed=seed, start_ts=T0)
        now = [T0]
        stage = ConsistencyStage(clock=lambda now=now: now[0])
        out: list[Finding] = []
        for t in range(70):
            records = [e.record for e in sim.tick()]
            now[0] = T0 + t
            out += stage.observe(records)
        out += stage.flush(now[0] + 5)
        assert stage.stats()["restarts"] >= 1, seed  # the scenario did restart
        fired += [(seed, f.summary) for f in new(out)]
    assert fired == []
