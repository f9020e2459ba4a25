import random

import numpy as np
import pytest

from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed
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


def _peak(stage, row):
    """The highest CUSUM (either side) of metric ``row`` (0 loss, 1 compute) over the ranks."""
    cusum = stage.jobs["job-a"].peers.cusum
    return float(max(cusum.up[row].max(initial=0), cusum.down[row].max(initial=0)))


@pytest.mark.parametrize(("ranks", "seed"), [(4, 1), (8, 2), (32, 3)])
def test_micro_batch_noise_over_2000_steps_raises_no_loss_outlier_or_straggler(ranks, seed):
    job, stage = FakeJob(ranks, seed=seed), ConsistencyStage()
    found, peak_loss, peak_slow = [], 0.0, 0.0
    for s in range(1, 2001):
        found += stage.observe(job.step(s))
        peak_loss, peak_slow = max(peak_loss, _peak(stage, 0)), max(peak_slow, _peak(stage, 1))
    assert found == []
    h = stage.config.loss_cusum_h
    # Not just silent: below the threshold with a margin (the two-sided loss CUSUM over
    # 64,000 rank-steps peaks near ln(2 x 64,000) - 1 ~ 11 for independent noise).
    assert peak_loss < 0.9 * h and peak_slow < 0.75 * h


def _shifted_loss(job, rank, factor, start):
    def over(s):
        if s < start:
            return None
        return {rank: {"loss": 2.0 * (1 + 0.03 * job.rng.gauss(0, 1)) * factor}}
    return over


def test_a_rank_whose_loss_sits_3_percent_high_is_blamed_within_120_steps():
    job = FakeJob(16, seed=4)
    found = _run(job, 400, _shifted_loss(job, 9, 1.03, 200))
    assert checks(found) == ["loss_outlier"]
    f = found[0]
    assert (f.ranks, f.nodes, f.category) == ([9], ["node-01"], "integrity")
    assert 200 < f.step <= 320
    assert f.evidence["direction"] == "high" and f.evidence["cusum"] > 16
    assert 0.015 < f.score < 0.06  # the smoothed departure: ~3 %
    assert f.evidence["peer_median"] == pytest.approx(2.0, rel=0.03)


def test_a_rank_whose_loss_sits_low_is_blamed_too():
    job = FakeJob(16, seed=11)
    found = _run(job, 400, _shifted_loss(job, 2, 0.95, 200))
    assert checks(found) == ["loss_outlier"]
    assert found[0].ranks == [2] and found[0].evidence["direction"] == "low"
    assert found[0].score < 0


def test_a_tight_job_does_not_page_on_a_1_percent_loss_shift():
    # Ranks agree to 0.1 %: a 1 % shift is 10 sigmas, yet below the minimum effect.
    job = FakeJob(16, seed=12, noise=False)

    def tight(s):
        return {r: {"loss": 2.0 * (1 + 0.001 * job.rng.gauss(0, 1))
                    * (1.01 if r == 5 and s >= 100 else 1.0)} for r in range(16)}

    assert _run(job, 400, tight) == []


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
    found = _run(job, 80, lambda s: {13: {"compute_time_s": 0.9 * 1.3}} if s >= 40 else None)
    assert checks(found) == ["straggler"]
    f = found[0]
    assert (f.ranks, f.nodes, f.category) == ([13], ["node-01"], "availability")
    assert 40 < f.step <= 55  # ~10 steps of clipped scores (2 above k each)
    assert f.score > 1.04 and "13 on node-01" in f.summary


def test_a_node_10_percent_slower_is_blamed_as_a_node_within_120_steps():
    job = FakeJob(24, seed=9)

    def slow(s):
        if s < 100:
            return None
        return {r: {"compute_time_s": 0.9 * 1.1 * (1 + 0.02 * job.rng.gauss(0, 1))}
                for r in range(8, 16)}

    found = _run(job, 300, slow)
    assert checks(found) == ["straggler"]
    f = found[0]
    assert f.nodes == ["node-01"] and f.ranks == list(range(8, 16))
    assert f.summary.startswith("node node-01") and 100 < f.step <= 220
    assert 1.04 < f.evidence["ratio_ewma"] < 1.12  # the moving average, still rising


def test_single_stalled_steps_raise_no_straggler():
    job = FakeJob(16, seed=8)
    found = _run(job, 600, lambda s: {s % 16: {"compute_time_s": 0.9 * 3}} if s % 25 == 0
                 else None)
    assert found == []


def _noisy_compute(rng, ranks):
    """A busy shared CPU host, as the simulator's noisy_steps: 15 % noise, slow bursts."""
    left, factor = [0] * ranks, [1.0] * ranks

    def over(s):
        out = {}
        for r in range(ranks):
            if left[r] == 0 and rng.random() < 0.06:
                left[r], factor[r] = rng.randint(1, 4), rng.uniform(1.1, 1.6)
            f = factor[r] if left[r] else 1.0
            left[r] = max(0, left[r] - 1)
            out[r] = {"compute_time_s": 0.9 * (1 + 0.15 * rng.gauss(0, 1)) * f}
        return out
    return over


@pytest.mark.parametrize(("ranks", "seed"), [(4, 1), (4, 2), (16, 3)])
def test_a_noisy_job_whose_ranks_often_exceed_1_1x_the_median_raises_nothing(ranks, seed):
    job = FakeJob(ranks, gpus=4, seed=seed)
    noisy = _noisy_compute(random.Random(seed), ranks)
    stage, found, over_1_1, n = ConsistencyStage(), [], 0, 0
    for s in range(1, 3001):
        batches = job.step(s, over=noisy(s))
        times = [x.compute_time_s for b in batches for x in b.steps]
        med = float(np.median(times))
        over_1_1 += sum(t > 1.1 * med for t in times)
        n += len(times)
        found += stage.observe(batches)
    assert 0.2 < over_1_1 / n < 0.4  # like the real CPU job: ~30 % of rank-steps
    assert found == []


def test_a_tight_job_finds_a_rank_10_percent_slower_but_not_one_1_percent_slower():
    job = FakeJob(16, seed=13, noise=False)

    def tight(slow):
        return lambda s: {r: {"compute_time_s": 0.9 * (1 + 0.002 * job.rng.gauss(0, 1))
                              * (slow if r == 3 and s >= 100 else 1.0)} for r in range(16)}

    assert _run(job, 400, tight(1.01)) == []
    found = _run(job, 400, tight(1.10))
    assert checks(found) == ["straggler"] and found[0].ranks == [3]


def test_thermal_slowdown_on_the_node_makes_a_straggler_a_hardware_finding():
    job = FakeJob(16, seed=10)
    hot = {("node-01", 5): {"clock_event_reasons": 0x20, "sm_clock_mhz": 1200}}
    found = _run(job, 60,
                 lambda s: {13: {"compute_time_s": 0.9 * 1.4}} if s >= 10 else None,
                 samples=lambda s: job.samples(T0 + s + 0.5, over=hot if s >= 10 else None))
    stragglers = [f for f in found if f.check == "straggler"]
    assert [(f.ranks, f.category) for f in stragglers] == [([13], "hardware")]
    assert "thermal" in stragglers[0].summary
    assert {f.check for f in found} == {"straggler", "gpu_throttled"}
