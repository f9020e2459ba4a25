import numpy as np
import pytest

from tests.pipeline.consistency.helpers import FakeJob, checks, feed
from trainguard.pipeline.consistency import ConsistencyStage


def _run(job, steps, over_at=lambda s: None, samples=None, stage=None):
    stage = stage or ConsistencyStage()
    batches = []
    for s in range(1, steps + 1):
        group = list(job.step(s, over=over_at(s)))
        if samples is not None:
            group += samples(s)
        batches.append(group)
    return feed(stage, batches)


@pytest.mark.parametrize(("ranks", "seed"), [(4, 1), (8, 2), (32, 3)])
def test_micro_batch_loss_noise_over_2000_steps_raises_no_loss_outlier(ranks, seed):
    job, stage = FakeJob(ranks, seed=seed), ConsistencyStage()
    found, peak = [], 0.0
    for s in range(1, 2001):
        found += stage.observe(job.step(s))
        peak = max(peak, float(np.abs(stage.jobs["job-a"].peers.loss_ewma).max(initial=0)))
    assert found == []
    assert peak < 0.75 * stage.config.loss_z  # not just silent: well clear of the threshold


def test_a_rank_whose_loss_sits_a_few_percent_high_is_blamed_within_120_steps():
    job = FakeJob(16, seed=4)

    def poisoned(s):
        if s < 200:
            return None
        return {9: {"loss": 2.0 * (1 + 0.03 * job.rng.gauss(0, 1)) * 1.05}}

    found = _run(job, 400, poisoned)
    assert checks(found) == ["loss_outlier"]
    f = found[0]
    assert (f.ranks, f.nodes, f.category) == ([9], ["node-01"], "integrity")
    assert 200 < f.step <= 320
    assert f.score > 0.8 and f.evidence["peer_median"] == pytest.approx(2.0, rel=0.03)


def test_a_rank_whose_local_gradient_departs_persistently_is_blamed():
    job = FakeJob(16, seed=5)
    found = _run(job, 60, lambda s: {3: {"local_grad_norm": 1.25 * 1.6}} if s >= 30 else None)
    assert checks(found) == ["local_grad_outlier"]
    assert (found[0].ranks, found[0].step) == ([3], 32)  # 3 of the last 5 steps


def test_one_step_of_odd_local_gradient_raises_nothing():
    job = FakeJob(16, seed=6)
    found = _run(job, 60, lambda s: {3: {"local_grad_norm": 9.0}} if s in (30, 40) else None)
    assert found == []


def test_a_slow_rank_is_a_straggler_relative_to_its_peers():
    job = FakeJob(16, seed=7)
    found = _run(job, 80, lambda s: {13: {"compute_time_s": 0.9 * 1.3}} if s >= 20 else None)
    assert checks(found) == ["straggler"]
    f = found[0]
    assert (f.ranks, f.nodes, f.category) == ([13], ["node-01"], "availability")
    assert f.step == 35  # 16 slow steps of the last 20
    assert f.score == pytest.approx(1.3, abs=0.1) and "13 on node-01" in f.summary


def test_a_single_slow_step_raises_no_straggler():
    job = FakeJob(16, seed=8)
    found = _run(job, 200, lambda s: {s % 16: {"compute_time_s": 0.9 * 3}} if s % 25 == 0
                 else None)
    assert found == []


def test_a_node_whose_ranks_are_all_slow_is_blamed_as_a_node():
    job = FakeJob(24, seed=9)
    slow = {r: {"compute_time_s": 0.9 * 1.25} for r in range(8, 16)}
    found = _run(job, 60, lambda s: slow if s >= 10 else None)
    assert checks(found) == ["straggler"]
    assert found[0].nodes == ["node-01"] and found[0].ranks == list(range(8, 16))
    assert found[0].summary.startswith("node node-01")


def test_thermal_slowdown_on_the_node_makes_a_straggler_a_hardware_finding():
    job = FakeJob(16, seed=10)
    hot = {("node-01", 5): {"clock_event_reasons": 0x20, "sm_clock_mhz": 1200}}
    found = _run(job, 60,
                 lambda s: {13: {"compute_time_s": 0.9 * 1.4}} if s >= 10 else None,
                 samples=lambda s: job.samples(job_ts(s), over=hot if s >= 10 else None))
    stragglers = [f for f in found if f.check == "straggler"]
    assert [(f.ranks, f.category) for f in stragglers] == [([13], "hardware")]
    assert "thermal" in stragglers[0].summary
    assert {f.check for f in found} == {"straggler", "gpu_throttled"}


def job_ts(s):
    from tests.pipeline.consistency.helpers import T0

    return T0 + s + 0.5
