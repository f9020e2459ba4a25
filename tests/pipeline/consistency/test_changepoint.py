"""The change-point tests on synthetic series: shifts found, trends and noise left alone."""

import math
import random

import pytest

from trainguard.pipeline.consistency.changepoint import LrJump, ShiftDetector, ShiftParams
from trainguard.pipeline.consistency.config import ConsistencyConfig

AT = 400  # the step a shift starts


def params(**over):
    c = ConsistencyConfig()
    values = dict(window=c.job_shift_window, lag=c.job_shift_lag, min_ref=c.job_shift_min_ref,
                  k=c.job_shift_k, h=c.job_shift_h, clip=c.job_shift_clip,
                  sigma_floor=c.job_shift_sigma_floor, min_effect=c.job_shift_loss_effect,
                  curve_t=c.job_shift_curve_t)
    values.update(over)
    return ShiftParams(**values)


def loss_curve(s):
    """The falling loss of a healthy run (log), as the simulator draws it."""
    return math.log(2.0 + 6.0 * math.exp(-s / 2000.0))


def run(det, steps, seed, *, noise=0.01, shift=0.0, ramp=0, curve=loss_curve, tails=0.0):
    """Feed ``steps`` points; return the first step a shift was found at, and the shift."""
    rng = random.Random(seed)
    for s in range(1, steps + 1):
        y = curve(s) + noise * rng.gauss(0.0, 1.0)
        if tails and rng.random() < tails:  # a stall: one step 2-3x
            y += math.log(rng.uniform(2.0, 3.0))
        if s >= AT and shift:
            y += math.log1p(shift * min(1.0, (s - AT + 1) / ramp if ramp else 1.0))
        found = det.update(float(s), y)
        if found is not None:
            return s, found
    return None, None


@pytest.mark.parametrize("size", [0.03, 0.05, 0.10, -0.05])
@pytest.mark.parametrize("seed", range(4))
def test_a_whole_job_loss_shift_is_found_within_120_steps(size, seed):
    at, shift = run(ShiftDetector(params()), AT + 200, seed, shift=size, ramp=60)
    assert at is not None and AT <= at < AT + 120
    assert shift.direction == (1 if size > 0 else -1)
    # Found during the 60-step ramp: the level then is part of the way there.
    assert 0.15 < shift.change / size < 1.3
    assert AT - 30 <= shift.since <= at


@pytest.mark.parametrize("seed", range(4))
def test_the_falling_loss_of_a_clean_run_fires_nothing(seed):
    assert run(ShiftDetector(params()), 6000, seed) == (None, None)


@pytest.mark.parametrize("curve", [
    lambda s: math.log(2.0 + 10.0 * s ** -0.5), lambda s: math.log(1.5 + 8.0 * s ** -0.3),
    lambda s: math.log(2.0 + 6.0 * math.exp(-s / 500.0)),
], ids=["power-0.5", "power-0.3", "exp-500"])
@pytest.mark.parametrize("noise", [0.003, 0.01, 0.03])
def test_a_loss_falling_like_a_power_law_early_in_training_fires_nothing(curve, noise):
    for seed in range(2):
        assert run(ShiftDetector(params()), 3000, seed, noise=noise, curve=curve) \
            == (None, None)


@pytest.mark.parametrize("seed", range(3))
def test_dataloader_stalls_in_a_flat_step_time_fire_nothing(seed):
    det = ShiftDetector(params(min_effect=0.05, down=False))
    assert run(det, 6000, seed, noise=0.02, curve=lambda s: math.log(0.95), tails=0.01) \
        == (None, None)


def test_a_step_time_slowdown_is_found_despite_stalls():
    det = ShiftDetector(params(min_effect=0.05, down=False))
    at, shift = run(det, AT + 200, 1, noise=0.01, curve=lambda s: math.log(0.95),
                    shift=0.15, tails=0.01)
    assert at is not None and AT <= at < AT + 20 and shift.direction == 1
    assert shift.change == pytest.approx(0.15, abs=0.03)
    assert shift.expected == pytest.approx(0.95, rel=0.01)


def test_a_one_sided_test_takes_a_shift_the_other_way_as_the_new_normal():
    det = ShiftDetector(params(min_effect=0.05, down=False))
    rng = random.Random(0)
    found = []
    for s in range(1, 1500):  # 30 % faster from AT on, then 20 % slower from 1000 on
        level = (0.7 if s >= AT else 1.0) * (1.2 if s >= 1000 else 1.0)
        shift = det.update(float(s), math.log(level) + 0.01 * rng.gauss(0.0, 1.0))
        if shift is not None:
            found.append((s, shift))
            det.reset()
    assert len(found) == 1
    at, shift = found[0]
    assert 1000 <= at < 1020 and shift.direction == 1
    assert shift.expected == pytest.approx(0.7, rel=0.02)


def test_a_shift_below_the_minimum_effect_is_not_worth_a_finding():
    det = ShiftDetector(params(min_effect=0.05, sigma_floor=0.001))
    # A perfectly quiet series: 1.5 % is dozens of noise units, but below 5 % / 2.
    assert run(det, AT + 600, 0, noise=0.0, curve=lambda s: 1.0, shift=0.015) == (None, None)


def test_nothing_is_scored_before_the_reference_is_built():
    p = params()
    det = ShiftDetector(p)
    for s in range(p.min_ref + p.lag):
        assert det.update(float(s), 10.0 * (s % 2)) is None  # wild, but only learned from
    assert det.ready


def test_reset_forgets_the_reference():
    det = ShiftDetector(params())
    run(det, 500, 0)
    assert det.ready
    det.reset()
    assert not det.ready


def schedule(s, warmup=100, total=1000, base=3e-4):
    if s <= warmup:
        return base * s / warmup
    progress = min(1.0, (s - warmup) / (total - warmup))
    return 0.1 * base + 0.9 * base * 0.5 * (1 + math.cos(math.pi * progress))


def lr_jumps(lr_at, steps):
    jump = LrJump(ConsistencyConfig().job_shift_lr_jump)
    return [(s, r) for s in range(steps) if (r := jump.update(float(s), lr_at(s))) is not None]


def test_warmup_and_cosine_decay_are_no_lr_jump():
    assert lr_jumps(schedule, 1500) == []


@pytest.mark.parametrize("factor", [1.5, 2.0, 3.0])
def test_an_lr_raised_everywhere_is_a_jump_at_that_step(factor):
    found = lr_jumps(lambda s: schedule(s) * (factor if s >= 300 else 1.0), 600)
    assert [s for s, _ in found] == [300]
    assert found[0][1][0] == pytest.approx(factor, rel=0.01)


def test_an_lr_raised_during_warmup_is_a_jump():
    found = lr_jumps(lambda s: schedule(s) * (3.0 if s >= 50 else 1.0), 200)
    assert [s for s, _ in found] == [50]


def test_a_step_decay_milestone_is_a_drop_once():
    found = lr_jumps(lambda s: 1e-3 * (0.1 if s >= 300 else 1.0), 600)
    assert [s for s, _ in found] == [300]
    assert found[0][1][0] == pytest.approx(0.1)


def test_a_rough_schedule_learns_its_own_roughness():
    rng = random.Random(0)
    assert lr_jumps(lambda s: 1e-3 * (1 + 0.03 * rng.gauss(0.0, 1.0)), 3000) == []
