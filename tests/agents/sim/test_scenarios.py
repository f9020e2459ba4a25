import pytest

from tests.agents.sim.util import by_ts, checkpoints, mean, replicas_agree, samples, steps
from trainguard.agents.sim import (
    SCENARIOS,
    JobSimulator,
    JobSpec,
    list_scenarios,
    make_scenario,
    scenario_params,
)
from trainguard.agents.sim.gpus import SM_CLOCK_MAX_MHZ
from trainguard.schemas.records import CHECK_NAMES

SPEC = JobSpec(nodes=3, gpus_per_node=4)
AT = 60
SEED = 1  # the simulator's noise; scenarios draw their culprits from their own seed
SABOTAGE = [
    "weight_tamper", "optimizer_tamper", "gradient_corruption", "kill", "rng_change",
    "node_slowdown", "poisoned_data", "code_injection", "checkpoint_corruption",
    "job_code_change", "job_lr_restart", "job_reseed_restart",
    "job_lr_change", "job_poison", "job_slowdown",
]
BENIGN = [
    "checkpoint_pause", "lr_schedule", "eval_phase", "clean_restart", "thermal_throttle",
    "job_resize", "noisy_steps", "clean_mix",
]
RESTARTS = {"weight_tamper", "checkpoint_corruption", "clean_restart", "job_code_change",
            "job_lr_restart", "job_reseed_restart"}


def run(name, ticks=150, *, seed=7, **params):
    if name in RESTARTS:
        params.setdefault("checkpoint_every", 30)
    scenario = make_scenario(name, SPEC, seed, at=AT, **params)
    sim = JobSimulator(SPEC, scenario, seed=SEED)
    return scenario, sim, sim.run(ticks)


def split(emits, ts):
    """Step records by tick, before and from event time ``ts``."""
    ticks = by_ts(emits)
    return ({k: v for k, v in ticks.items() if k < ts},
            {k: v for k, v in ticks.items() if k >= ts})


def test_library_has_every_required_scenario():
    assert list_scenarios("sabotage") == SABOTAGE
    assert list_scenarios("benign") == BENIGN
    assert list_scenarios() == SABOTAGE + BENIGN
    assert all(SCENARIOS[n].description for n in SCENARIOS)


@pytest.mark.parametrize("name", SABOTAGE + BENIGN)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expectation_names_real_checks_ranks_and_nodes(name, seed):
    scenario = make_scenario(name, JobSpec(), seed)
    sim = JobSimulator(JobSpec(), scenario)
    e = scenario.expected()
    registry = set(CHECK_NAMES)
    assert e.checks <= registry and e.hardware_checks <= registry and e.tolerated <= registry
    assert e.culprit_ranks <= set(range(32))
    assert e.culprit_nodes == {sim.node_of(r) for r in e.culprit_ranks}
    assert e.starts_at_ts >= sim.start_ts + scenario.at
    if scenario.kind == "sabotage":
        assert e.checks and e.culprit_ranks and e.severity in ("hard", "subtle")
    else:
        assert not e.checks and e.severity is None


@pytest.mark.parametrize("name", ["weight_tamper", "gradient_corruption", "kill",
                                  "node_slowdown", "poisoned_data", "thermal_throttle"])
def test_different_seeds_blame_different_culprits(name):
    culprits = {make_scenario(name, JobSpec(), s).expected().culprit_ranks for s in range(10)}
    assert len(culprits) > 1


@pytest.mark.parametrize("name", SABOTAGE + BENIGN)
def test_scenario_runs_are_reproducible(name):
    assert run(name, 80)[2] == run(name, 80)[2]


@pytest.mark.parametrize("name", ["gradient_corruption", "rng_change", "poisoned_data",
                                  "code_injection", "kill", "node_slowdown", "job_lr_change",
                                  "job_poison", "job_slowdown"])
def test_scenario_changes_nothing_before_it_starts(name):
    emits = run(name, AT)[2]
    assert emits == JobSimulator(SPEC, seed=SEED).run(AT)


def test_unknown_scenario_or_parameter_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="unknown scenario 'nope'; expected one of: weight"):
        make_scenario("nope", SPEC)
    with pytest.raises(ValueError, match="unknown parameter.* colour .*expected: at, n_ranks"):
        make_scenario("optimizer_tamper", SPEC, colour="red")
    assert scenario_params("gradient_corruption") == {
        "at": 150, "scale": 4.0, "mode": "scale", "rank": None
    }


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("weight_tamper", {"rank": 99}, "rank 99 out of range 0..11"),
        ("kill", {"node": 3}, "node 3 out of range 0..2"),
        ("optimizer_tamper", {"lr_factor": 1.0}, "lr_factor must be > 0 and != 1"),
        ("optimizer_tamper", {"n_ranks": 6}, "6 tampered ranks must be a minority"),
        ("optimizer_tamper", {"ranks": (0, 1, 2, 3, 4, 5)}, "6 tampered ranks must be a minority"),
        ("gradient_corruption", {"mode": "melt"}, "unknown mode 'melt'"),
        ("node_slowdown", {"factor": 0.9}, "factor must be > 1, got 0.9"),
        ("clean_restart", {"at": 20}, "at=20 comes before the first checkpoint"),
        ("poisoned_data", {"at": 0}, "at must be >= 1"),
    ],
)
def test_bad_scenario_parameters_are_rejected(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_scenario(name, SPEC, **params)


def test_scenarios_needing_peers_reject_a_too_small_job():
    with pytest.raises(ValueError, match="needs >= 2 nodes"):
        make_scenario("kill", JobSpec(nodes=1))
    with pytest.raises(ValueError, match="needs >= 3 data-parallel replicas"):
        make_scenario("weight_tamper", JobSpec(nodes=1, gpus_per_node=4, tp_size=2))


# -- sabotage: the fault is in the records, after `at` and not before --------------------


def test_weight_tamper_diverges_the_culprit_after_a_clean_load():
    scenario, sim, emits = run("weight_tamper")
    culprit, e = scenario.culprit, scenario.expected()
    loads, saves = checkpoints(emits, "load"), checkpoints(emits, "save")
    saved = {(s.checkpoint_id, s.rank): s.digest for s in saves}
    assert len(loads) == 12 and all(saved[(x.checkpoint_id, x.rank)] == x.digest for x in loads)
    before, after = split(emits, e.starts_at_ts)
    assert all(replicas_agree(rs) for rs in before.values())
    assert after and min(after) == e.starts_at_ts
    for records in after.values():
        mine = next(r for r in records if r.rank == culprit)
        assert all(r.param_checksum != mine.param_checksum for r in records if r is not mine)
        assert replicas_agree([r for r in records if r is not mine])


def test_optimizer_tamper_changes_lr_and_params_of_the_tampered_ranks():
    scenario, _, emits = run("optimizer_tamper", lr_factor=1.5)
    culprits = set(scenario.culprits)
    before, after = split(emits, scenario.expected().starts_at_ts)
    assert all(len({r.lr for r in rs}) == 1 and replicas_agree(rs) for rs in before.values())
    for records in after.values():
        honest = [r for r in records if r.rank not in culprits]
        bad = [r for r in records if r.rank in culprits]
        assert len({r.lr for r in honest}) == 1 and replicas_agree(honest)
        assert all(r.lr == pytest.approx(1.5 * honest[0].lr) for r in bad)
        assert not {r.param_checksum for r in bad} & {r.param_checksum for r in honest}


def test_gradient_corruption_inflates_one_local_norm_and_everyones_reduced_norm():
    scenario, _, emits = run("gradient_corruption", scale=4.0)
    clean = by_ts(JobSimulator(SPEC, seed=SEED).run(150))
    before, after = split(emits, scenario.expected().starts_at_ts)
    assert before == {ts: clean[ts] for ts in before}
    for ts, records in after.items():
        mine = next(r for r in records if r.rank == scenario.culprit)
        others = [r.local_grad_norm for r in records if r is not mine]
        assert mine.local_grad_norm > 3 * max(others)
        assert len({r.grad_norm for r in records}) == 1
        assert records[0].grad_norm > 1.2 * clean[ts][0].grad_norm


def test_kill_removes_the_nodes_ranks_while_peers_keep_stepping_then_hang():
    scenario, sim, emits = run("kill", peers_continue_s=20)
    e = scenario.expected()
    node = next(iter(e.culprit_nodes))
    before, after = split(emits, e.starts_at_ts)
    assert all(len(rs) == 12 for rs in before.values())
    assert sorted(after) == [e.starts_at_ts + k for k in range(20)]
    for records in after.values():
        assert {r.rank for r in records} == set(range(12)) - e.culprit_ranks
    dead = [b for b in samples(emits) if b.node == node and b.ts >= e.starts_at_ts]
    assert all(b.job_id == "job-0" for b in dead)
    assert all(g.util_gpu_pct < 5 and g.compute_procs == 0 for b in dead for g in b.gpus)
    hung = [g for b in samples(emits) if b.node != node and b.ts > e.starts_at_ts + 20
            for g in b.gpus]
    assert hung and all(g.util_gpu_pct > 90 for g in hung)


def test_rng_change_changes_one_ranks_seed_fingerprint_and_loss_noise():
    scenario, _, emits = run("rng_change")
    clean = by_ts(JobSimulator(SPEC, seed=SEED).run(150))
    before, after = split(emits, scenario.expected().starts_at_ts)
    assert before == {ts: clean[ts] for ts in before}
    for ts, records in after.items():
        for r, c in zip(records, clean[ts], strict=True):
            changed = r.rank == scenario.culprit
            assert (r.seed_fingerprint != c.seed_fingerprint) == changed
            assert (r.loss != c.loss) == changed


def test_node_slowdown_throttles_one_nodes_clocks_and_slows_its_ranks():
    scenario, _, emits = run("node_slowdown", factor=1.25, ramp_s=10)
    e = scenario.expected()
    node = next(iter(e.culprit_nodes))
    _, after = split(emits, e.starts_at_ts + 10)
    slow = [r.compute_time_s for rs in after.values() for r in rs if r.rank in e.culprit_ranks]
    fast = [r.compute_time_s for rs in after.values() for r in rs
            if r.rank not in e.culprit_ranks]
    assert mean(slow) / mean(fast) == pytest.approx(1.25, abs=0.02)
    late = [b for b in samples(emits) if b.ts >= e.starts_at_ts + 10]
    mine = [g for b in late if b.node == node for g in b.gpus if g.util_gpu_pct > 50]
    assert mine and all(g.clock_event_reasons == 0x2 for g in mine)
    assert all(g.sm_clock_mhz == int(SM_CLOCK_MAX_MHZ / 1.25) for g in mine)
    assert all(g.clock_event_reasons in (0, 1) for b in late if b.node != node for g in b.gpus)


def test_poisoned_data_raises_one_ranks_loss_against_its_peers():
    scenario, _, emits = run("poisoned_data", 200, loss_increase=0.08, ramp_s=30)
    e = scenario.expected()

    def ratio(ticks):
        mine = [r.loss for rs in ticks.values() for r in rs if r.rank == scenario.culprit]
        peers = [r.loss for rs in ticks.values() for r in rs if r.rank != scenario.culprit]
        return mean(mine) / mean(peers)

    before, after = split(emits, e.starts_at_ts + 30)
    assert ratio(before) == pytest.approx(1.0, abs=0.02)
    assert ratio(after) == pytest.approx(1.08, abs=0.02)


def test_code_injection_changes_one_ranks_env_fingerprint():
    scenario, _, emits = run("code_injection")
    before, after = split(emits, scenario.expected().starts_at_ts)
    assert len({r.env_fingerprint for rs in before.values() for r in rs}) == 1
    for records in after.values():
        mine = next(r for r in records if r.rank == scenario.culprit)
        assert all(r.env_fingerprint != mine.env_fingerprint for r in records if r is not mine)
        assert len({r.env_fingerprint for r in records}) == 2


def test_checkpoint_corruption_loads_a_shard_whose_digest_changed():
    scenario, _, emits = run("checkpoint_corruption")
    e = scenario.expected()
    saved = {(s.checkpoint_id, s.rank): s.digest for s in checkpoints(emits, "save")}
    loads = checkpoints(emits, "load")
    assert {x.ts for x in loads} == {e.starts_at_ts} and len(loads) == 12
    changed = {x.rank for x in loads if saved[(x.checkpoint_id, x.rank)] != x.digest}
    assert changed == {scenario.culprit} == e.culprit_ranks
    _, after = split(emits, e.starts_at_ts)
    assert after and not any(replicas_agree(rs) for rs in after.values())


def test_checkpoint_corruption_can_leave_the_weights_alone():
    scenario, _, emits = run("checkpoint_corruption", touch_params=False)
    assert scenario.expected().checks == {"checkpoint_digest"}
    assert all(replicas_agree(rs) for rs in by_ts(emits).values())


# -- benign: no integrity invariant breaks ------------------------------------------------


@pytest.mark.parametrize("name", BENIGN)
def test_benign_scenarios_keep_every_integrity_invariant(name):
    _, _, emits = run(name)
    fingerprints = {(r.env_fingerprint, r.seed_fingerprint) for r in steps(emits)}
    assert len(fingerprints) == 1
    for records in by_ts(emits).values():
        assert replicas_agree(records)
        assert len({(r.lr, r.grad_norm, r.step, r.world_size) for r in records}) == 1
    saved = {(s.checkpoint_id, s.rank): s.digest for s in checkpoints(emits, "save")}
    assert all(saved[(x.checkpoint_id, x.rank)] == x.digest for x in checkpoints(emits, "load"))


def test_checkpoint_pause_saves_often_and_every_gpu_dips():
    _, _, emits = run("checkpoint_pause", every=20, pause_s=4)
    saved = sorted({s.step for s in checkpoints(emits, "save")})
    assert saved == [20, 40, 60, 80, 100, 120]
    assert len(by_ts(emits)) == 150 - 4 * len(saved)
    dips = [b.ts for b in samples(emits) if max(g.util_gpu_pct for g in b.gpus) < 20]
    assert len(dips) == 3 * 4 * len(saved)


def test_lr_schedule_warms_up_until_at_then_decays():
    _, _, emits = run("lr_schedule", 300, total_steps=400)
    lrs = {r.step: r.lr for r in steps(emits)}
    peak = max(lrs, key=lambda s: lrs[s])
    assert peak == AT
    assert lrs[1] < lrs[AT // 2] < lrs[AT] and lrs[AT] > lrs[150] > lrs[290]


def test_clean_restart_goes_back_to_the_checkpoint_step():
    scenario, sim, emits = run("clean_restart", down_s=10)
    loads = checkpoints(emits, "load")
    assert {x.checkpoint_id for x in loads} == {"job-0/step-30"}
    first = min(ts for ts in by_ts(emits) if ts > scenario.ts_of(AT))
    assert first == scenario.ts_of(AT + 10 + 1)
    assert by_ts(emits)[first][0].step == 31
    down = [b for b in samples(emits) if scenario.ts_of(AT) <= b.ts < first]
    assert all(g.util_gpu_pct < 10 for b in down for g in b.gpus)


def test_thermal_throttle_heats_one_gpu_and_slows_its_rank():
    scenario, _, emits = run("thermal_throttle")
    e = scenario.expected()
    assert e.hardware_checks == {"gpu_throttled"} and not e.checks
    hot = [(b.node, g.index) for b in samples(emits) for g in b.gpus
           if g.temp_c > 85 and g.clock_event_reasons & 0x60 == 0x60 and g.sm_clock_mhz < 1500]
    assert set(hot) == {(next(iter(e.culprit_nodes)), scenario.culprit_gpu)}
    assert len(hot) == 150 - AT
    _, after = split(emits, e.starts_at_ts)
    mine = [r.compute_time_s for rs in after.values() for r in rs if r.rank == scenario.culprit]
    peers = [r.compute_time_s for rs in after.values() for r in rs if r.rank != scenario.culprit]
    assert mean(mine) / mean(peers) == pytest.approx(1.15, abs=0.02)


def test_job_resize_drops_the_last_node_and_shrinks_the_world():
    scenario, _, emits = run("job_resize")
    before, after = split(emits, scenario.ts_of(AT))
    assert all({r.world_size for r in rs} == {12} and len(rs) == 12 for rs in before.values())
    assert all({r.world_size for r in rs} == {8} and {r.rank for r in rs} == set(range(8))
               for rs in after.values())
    left = [e for e in emits if getattr(e.record, "node", None) == "node-02"
            and e.record.ts >= scenario.ts_of(AT) and e.topic != "heartbeats"]
    assert all(e.topic == "samples" and e.record.job_id is None and e.key == b"node-02"
               for e in left)


def test_noisy_steps_puts_ranks_above_1_1x_the_median_in_about_30_percent_of_steps():
    _, _, emits = run("noisy_steps", 400)
    above = total = 0
    for records in by_ts(emits).values():
        times = sorted(r.compute_time_s for r in records)
        med = (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
        above += sum(t > 1.1 * med for t in times)
        total += len(times)
    assert 0.22 < above / total < 0.38
    assert all(r.seed_fingerprint == steps(emits)[0].seed_fingerprint for r in steps(emits))


def test_clean_mix_restarts_cleanly_and_reports_data_epochs():
    scenario, sim, emits = run("clean_mix", 420, checkpoint_every=30, pause_s=3, eval_every=45,
                               eval_s=4, restart_every=200, down_s=5, epoch_steps=50,
                               warmup_steps=20, total_steps=2000)
    recs = steps(emits)
    numbers = [r.step for r in recs if r.rank == 0]
    assert any(b < a for a, b in zip(numbers, numbers[1:], strict=False))  # went back
    assert len(checkpoints(emits, "load")) >= SPEC.world_size
    saved = {(s.checkpoint_id, s.rank): s.digest for s in checkpoints(emits, "save")}
    assert all(saved[(x.checkpoint_id, x.rank)] == x.digest for x in checkpoints(emits, "load"))
    assert {r.data_epoch for r in recs} >= {0, 1, 2}
    for records in by_ts(emits).values():  # every rank alike at every step
        assert replicas_agree(records)
        assert len({(r.lr, r.data_epoch, r.seed_fingerprint) for r in records}) == 1
    by_epoch = {}
    for r in recs:
        by_epoch.setdefault(r.data_epoch, set()).add(r.seed_fingerprint)
    assert all(len(v) == 1 for v in by_epoch.values()) and len(by_epoch) >= 3
    assert len({next(iter(v)) for v in by_epoch.values()}) == len(by_epoch)
