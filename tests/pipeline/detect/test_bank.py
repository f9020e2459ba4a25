import dataclasses
from dataclasses import replace

import numpy as np
import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.detect import BankConfig, DetectorBank, EntityRegistry

#: Spikes reported as soon as the row is warm: the tests of the spike mechanics.
SPIKY = BankConfig(spike_quiet_s=0.0)


def normal(rng, n, rows=None):
    return rng.standard_normal(n if rows is None else (n, rows))


def test_ten_thousand_points_of_standard_normal_noise_give_no_anomaly(rng, feed):
    assert feed(DetectorBank("x"), normal(rng, 10_000, 3)) == []


@pytest.mark.parametrize("integer", [False, True])
def test_utilization_around_96_give_no_anomaly(rng, feed, integer):
    util = np.minimum(96 + 2 * normal(rng, 3000, 50), 100)
    util = np.round(util) if integer else util
    assert feed(DetectorBank("util", BankConfig(direction="down")), util) == []


def test_a_single_spike_is_one_spike_reported_one_point_late(rng, feed):
    x = normal(rng, 500)
    x[300], x[301] = 12.0, 0.5  # the next point is back within z_clear
    (a,) = feed(DetectorBank("x", SPIKY), x)
    assert (a.kind, a.first_seen, a.ts, a.value) == ("spike", 300, 301, 12.0)
    assert a.score > 8 and a.window == 60 and a.detector == "robust-cusum"


def test_a_spike_counts_only_after_the_row_stayed_quiet_for_spike_quiet_s(rng, feed):
    config = BankConfig(spike_quiet_s=400.0)
    x = normal(rng, 1200)
    x[[300, 800]] = 15.0  # 270 s after warm-up: too early; then 500 s after the first
    (a,) = feed(DetectorBank("x", config), x)
    assert (a.kind, a.first_seen) == ("spike", 800)


def test_a_level_shift_is_one_level_shift_confirmed_within_confirm_points(rng, feed):
    x = normal(rng, 800)
    x[300:] -= 8.0
    (a,) = feed(DetectorBank("x"), x)
    assert a.kind == "level_shift" and a.first_seen == 300
    assert a.ts == 300 + BankConfig().confirm - 1
    assert a.score < -4 and abs(a.baseline) < 0.5 and a.scale == pytest.approx(1, abs=0.3)


def test_a_slow_drift_is_a_drift_within_150_points(rng, feed):
    x = normal(rng, 900, 20)
    x[500:] += 0.02 * np.arange(400)[:, None]  # 0.02 sigma per point
    found = feed(DetectorBank("x"), x)
    first = {a.row: a for a in reversed(found)}
    assert sorted(first) == list(range(20))
    assert all(500 < a.ts <= 650 and a.first_seen >= 450 for a in first.values())
    # Early on a ramp is hard to tell from a small step; most are called drifts.
    assert sum(a.kind == "drift" for a in first.values()) >= 16


def test_no_verdict_before_min_samples_even_for_wild_values(rng, feed):
    wild = rng.choice([-1e6, 0.0, 1e6], size=(29, 20))
    bank = DetectorBank("x")
    assert feed(bank, wild) == []
    assert bank.window.count[:20].tolist() == [29] * 20


def test_the_first_verdict_comes_right_after_warm_up(rng, feed):
    x = normal(rng, 40)
    x[30:32] = 50.0  # a two-point burst on the first two judged points
    (a,) = feed(DetectorBank("x", replace(SPIKY, min_samples=30)), x)
    assert a.kind == "spike" and a.first_seen == 30


@pytest.mark.parametrize("pattern", ["noisy", "square"])
def test_a_signal_hovering_at_the_shift_threshold_fires_at_most_once(rng, feed, pattern):
    x = normal(rng, 1500)
    if pattern == "noisy":
        x[300:] = 4.0 + 0.3 * normal(rng, 1200)
    else:
        x[300:] = np.where(np.arange(1200) % 4 < 2, 3.8, 4.3)
    assert len(feed(DetectorBank("x"), x)) <= 1


def test_spikes_that_keep_coming_are_one_anomaly_not_a_storm(rng, feed):
    x = normal(rng, 600)
    x[300:420:3] = 15.0  # a spike every third point for 120 points
    found = feed(DetectorBank("x", SPIKY), x)
    assert [a.kind for a in found] == ["spike"]


def test_direction_down_ignores_an_upward_shift_and_flags_a_drop(rng, feed):
    bank = DetectorBank("util", BankConfig(direction="down"))
    x = normal(rng, 1200)
    x[300:] += 10.0
    x[900:] -= 20.0
    (a,) = feed(bank, x)
    assert a.kind == "level_shift" and a.first_seen == 900 and a.score < 0


def test_among_a_thousand_rows_exactly_the_injected_two_are_flagged(rng, feed):
    x = 96 + 2 * normal(rng, 600, 1000)
    x[400, 17] = 40.0
    x[450:, 503] += 30.0
    found = feed(DetectorBank("util", SPIKY), x)
    assert sorted((a.row, a.kind) for a in found) == [(17, "spike"), (503, "level_shift")]


def test_a_cleared_alarm_lets_the_row_fire_again(rng, feed):
    x = normal(rng, 700)
    x[300:360] += 9.0  # a 60-point shift that ends before re-baselining
    x[500] = -12.0
    found = feed(DetectorBank("x", replace(SPIKY, episode_s=0.0)), x)
    assert [(a.kind, a.first_seen) for a in found] == [("level_shift", 300), ("spike", 500)]


def test_the_baseline_is_frozen_during_an_alarm(rng, feed):
    x = normal(rng, 400)
    x[300:] += 9.0
    bank = DetectorBank("x")
    feed(bank, x[:303])
    before = bank.state()
    feed(bank, x[303:400], t0=303)  # 97 points in alarm, short of relearn_after
    after = bank.state()
    for name in ("window.buf", "level.mean", "spread.var"):
        assert np.array_equal(before[name], after[name], equal_nan=True), name


def test_a_shift_lasting_relearn_after_points_becomes_the_new_baseline(rng, feed):
    x = normal(rng, 1000)
    x[300:] += 10.0
    x[700:] += 10.0
    found = feed(DetectorBank("x", BankConfig(episode_s=0.0)), x)
    assert [(a.kind, a.first_seen) for a in found] == [("level_shift", 300), ("level_shift", 700)]
    assert found[1].baseline == pytest.approx(10.0, abs=0.5)


def test_page_hinkley_banks_flag_a_shift_too(rng, feed):
    x = normal(rng, 600)
    x[400:] += 2.5  # below z_shift: only the change-point test can see it
    (a,) = feed(DetectorBank("x", BankConfig(changepoint="page-hinkley")), x)
    assert a.kind == "level_shift" and a.detector == "robust-page-hinkley" and a.ts < 430


def test_nan_values_are_skipped(rng, feed):
    x = normal(rng, 500)
    x[300] = 12.0
    holes = x.copy()
    holes[[100, 250, 301, 302]] = np.nan
    holes[303] = 0.0  # the spike is confirmed by the next point that has a value
    (a,) = feed(DetectorBank("x", SPIKY), holes)
    assert (a.kind, a.first_seen, a.ts) == ("spike", 300, 303)


def test_replayed_and_late_points_change_nothing(rng):
    x = normal(rng, 300, 4)
    once, twice = DetectorBank("x"), DetectorBank("x")
    rows = np.arange(4)
    for k, tick in enumerate(x):
        once.update(rows, tick, np.full(4, float(k)))
        twice.update(rows, tick, np.full(4, float(k)))
        twice.update(rows, tick + 100, np.full(4, float(k)))  # replay with other values
        twice.update(rows, tick, np.full(4, k - 0.5))  # late
    assert all(np.array_equal(v, twice.state()[k], equal_nan=True) for k, v in once.state().items())


def test_a_row_repeated_in_one_batch_is_applied_in_event_time_order(rng):
    x = normal(rng, 100)
    one, batched = DetectorBank("x"), DetectorBank("x")
    for k, v in enumerate(x):
        one.update(np.array([0]), np.array([v]), np.array([float(k)]))
    order = rng.permutation(100)
    batched.update(np.zeros(100, dtype=np.int64), x[order], order.astype(float))
    assert all(np.array_equal(v, batched.state()[k], equal_nan=True)
               for k, v in one.state().items())


def test_state_round_trip_continues_exactly_like_never_stopping(rng, feed, tmp_path):
    x = normal(rng, 700, 50)
    x[380, 3] = 15.0  # a spike still pending at the snapshot (after point 380)
    x[340:, 7] += 8.0  # in alarm at the snapshot
    x[500:, 9] -= 8.0
    straight, stopped = DetectorBank("x", SPIKY), DetectorBank("x", SPIKY)
    feed(stopped, x[:381])
    np.savez(tmp_path / "snap.npz", **stopped.state())
    restored = DetectorBank("x", SPIKY)
    with np.load(tmp_path / "snap.npz") as snap:
        restored.load_state(dict(snap))
    expected = feed(straight, x)
    got = feed(restored, x[381:], t0=381)
    assert got == [a for a in expected if a.ts >= 381] and len(got) >= 2
    assert all(np.array_equal(v, restored.state()[k], equal_nan=True)
               for k, v in straight.state().items())


def test_state_rows_move_rows_to_another_bank(rng, feed):
    x = normal(rng, 600, 6)
    x[450:, 4] += 9.0
    source, target, reference = DetectorBank("x"), DetectorBank("x", capacity=1), DetectorBank("x")
    feed(source, x[:400])
    target.load_state_rows(np.array([11, 0]), source.state_rows(np.array([4, 1])))
    moved = feed(target, x[400:, [4, 1]], t0=400, rows=np.array([11, 0]))
    expected = [dataclasses.replace(a, row=11) for a in feed(reference, x) if a.row == 4]
    assert moved == expected and len(moved) == 1 and target.capacity >= 12


def test_reset_rows_starts_rows_over(rng, feed):
    bank = DetectorBank("x")
    feed(bank, normal(rng, 100, 3))
    bank.reset_rows(np.array([1]))
    assert bank.window.count[:3].tolist() == [60, 0, 60] and bank.rows.last_ts[1] == -np.inf


def test_update_grows_the_bank_for_new_rows(rng):
    bank = DetectorBank("x", capacity=2)
    bank.update(np.array([0, 5000]), np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    assert bank.capacity >= 5001 and bank.window.count[5000] == 1


@pytest.mark.parametrize(
    "kwargs",
    [dict(z_clear=5.0), dict(min_samples=100), dict(confirm=1), dict(relearn_after=10),
     dict(direction="sideways"), dict(changepoint="ewma"), dict(min_scale=0.0)],
)
def test_bad_config_is_rejected_naming_the_value(kwargs):
    with pytest.raises(ConfigError, match=str(next(iter(kwargs.values())))):
        BankConfig(**kwargs)


def test_a_snapshot_of_another_layout_is_rejected():
    cusum, ph = DetectorBank("x"), DetectorBank("x", BankConfig(changepoint="page-hinkley"))
    with pytest.raises(ValueError, match="unexpected"):
        cusum.load_state(ph.state())
    with pytest.raises(ValueError, match="buf"):
        DetectorBank("x", BankConfig(window=30)).load_state(cusum.state())


def test_a_batch_of_only_nan_values_changes_nothing(rng, feed):
    bank = DetectorBank("x")
    feed(bank, normal(rng, 50, 3))
    before = bank.state()
    assert bank.update(np.arange(3), np.full(3, np.nan), np.full(3, 99.0)) == []
    assert all(np.array_equal(v, bank.state()[k], equal_nan=True) for k, v in before.items())


def test_a_row_reused_for_a_new_entity_warms_up_afresh(rng, feed):
    reg, bank = EntityRegistry(), DetectorBank("util")
    for k, v in enumerate(96 + 2 * normal(rng, 100)):
        bank.update(reg.rows_for(["old/0"], np.array([k])), np.array([v]), np.array([k]))
    freed = reg.expire(now_ts=500.0, idle_s=300.0)
    bank.reset_rows(np.array(freed))
    row = reg.rows_for(["new/0"], np.array([501.0]))
    # 20 points at a very different level: a new entity in warm-up, not a level shift.
    found = feed(bank, np.full((20, 1), 10.0), t0=501, rows=row)
    assert freed == [0] and row.tolist() == [0] and found == []


def test_baseline_reports_the_median_and_scale_points_are_judged_against(rng, feed):
    bank = DetectorBank("util")
    feed(bank, 96 + 2 * normal(rng, 300, 2))
    median, scale, count = bank.baseline(np.array([0, 1, 7]))
    assert np.allclose(median[:2], 96, atol=1) and np.allclose(scale[:2], 2, rtol=0.3)
    assert count.tolist() == [60, 60, 0] and np.isnan(median[2])


class _AllBusy(DetectorBank):
    """The bank without the quiet-row shortcut: every free row takes the full state machine."""

    def _judge(self, r, x, t, z, zs, median, scale, slow_scale, count, big):  # type: ignore[no-untyped-def]
        e = self._directional(z)
        changes = self._changes(r, zs, t)
        beyond = (e > self.config.z_shift) & big
        return self._excursions(r, x, t, z, e, zs, median, scale, slow_scale, count, big,
                                changes, self.rows.exc_open[r], beyond)


@pytest.mark.parametrize("changepoint", ["cusum", "page-hinkley"])
def test_the_quiet_row_shortcut_changes_no_state_and_no_finding(changepoint: str) -> None:
    # 400 rows: most stay quiet, some spike, shift, drift or go missing, at random times;
    # the shortcut must leave every array exactly as the full state machine does.
    rng = np.random.default_rng(7)
    config = BankConfig(changepoint=changepoint, spike_quiet_s=0.0)
    fast, full = DetectorBank("x", config), _AllBusy("x", config)
    rows = np.arange(400)
    level = rng.normal(100, 5, 400)
    found = {"fast": [], "full": []}
    for k in range(400):
        x = level + rng.normal(0, 1, 400)
        x[rng.random(400) < 0.01] += 40  # spikes
        if 80 < k < 200:
            x[:20] += 15  # a level shift, and back
        if 80 < k < 300:
            x[20:40] += 0.08 * min(k - 80, 300 - k)  # a slow drift up, and back
            x[40:60] += 1.5  # a small shift (the change-point test's), and back
        x[rng.random(400) < 0.02] = np.nan  # unreported
        t = np.full(400, 1_790_000_000.0 + k)
        found["fast"] += fast.update(rows, x, t)
        found["full"] += full.update(rows, x, t)
    assert found["fast"] == found["full"]
    assert {d.kind for d in found["fast"]} >= {"spike", "level_shift"}
    a, b = fast.state(), full.state()
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name
