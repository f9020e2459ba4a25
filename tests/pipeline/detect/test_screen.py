"""Quiet baselines (issue #16): peers, episodes, heavy tails, effect floor; faults still found."""

from __future__ import annotations

import numpy as np
import pytest

from trainguard.pipeline.detect import BankConfig, Detection, DetectorBank


def feed_group(bank: DetectorBank, values: np.ndarray, groups: np.ndarray | None = None,
               t0: float = 0.0) -> list[Detection]:
    """Feed ticks x rows, one tick per second, every row in its group."""
    rows = np.arange(values.shape[1])
    found: list[Detection] = []
    for k, tick in enumerate(values):
        found += bank.update(rows, tick, np.full(len(rows), t0 + k), groups)
    return found


def power(rng: np.random.Generator, n: int, rows: int, df: float = 3.0) -> np.ndarray:
    """Power around 300 W with heavy-tailed (Student t) noise of ~1.5 %."""
    return 300.0 * (1 + 0.015 * rng.standard_t(df, (n, rows)))


JOB = np.zeros(16, dtype=np.int64)


def test_a_checkpoint_dip_of_the_whole_job_is_not_reported_and_counted_as_shared(rng):
    x = power(rng, 900, 16)
    jitter = rng.integers(0, 3, 16)
    for row in range(16):
        x[400 + jitter[row]: 440 + jitter[row], row] = 70.0  # idle during the checkpoint
    bank = DetectorBank("power_w")
    assert feed_group(bank, x, JOB) == []
    assert bank.suppressed["shared"] >= 16


def test_rows_not_in_use_are_no_peers_whatever_their_memory_holds(rng):
    x = power(rng, 900, 16)
    for row in range(16):
        x[400:440, row] = 70.0
    bank = DetectorBank("power_w", capacity=16)
    bank.grow(17)
    bank.grow(35)  # room for 70 rows, 35 in use: rows 35.. are memory never written
    st = bank.rows
    assert (st.capacity, st.filled) == (70, 35)
    # As if that memory held 35 live members of the job that never depart: counted as
    # peers, they would make the job's own dip look like 16 GPUs failing alone.
    st.group[35:], st.last_ts[35:], st.alarm[35:] = 0, 1e12, 0
    st.dep_down[35:] = st.dep_up[35:] = -np.inf
    assert feed_group(bank, x, JOB) == []
    assert bank.suppressed["shared"] >= 16


def test_without_groups_the_same_dip_is_reported_on_every_gpu(rng):
    x = power(rng, 900, 16)
    x[400:440] = 70.0
    found = feed_group(DetectorBank("power_w"), x)
    assert sorted(a.row for a in found) == list(range(16))
    assert {a.kind for a in found} == {"level_shift"}


def test_one_gpu_collapsing_alone_right_after_a_shared_dip_is_still_reported(rng):
    x = power(rng, 900, 16)
    x[400:440] = 70.0
    x[500:, 5] = 65.0
    found = feed_group(DetectorBank("power_w"), x, JOB)
    assert [(a.row, a.kind) for a in found] == [(5, "level_shift")]
    assert 500 <= found[0].first_seen <= found[0].ts <= 510


def test_a_regime_change_of_the_whole_job_is_relearned_as_the_new_normal(rng):
    config = BankConfig()
    x = power(rng, 1200, 16)
    x[400:] *= 1.15  # a new phase of the job: every GPU draws 15 % more, for good
    x[900:, 3] *= 0.8  # later one GPU alone loses 20 % against the new level
    bank = DetectorBank("power_w", config)
    found = feed_group(bank, x, JOB)
    median, _, _ = bank.baseline(np.arange(16))
    assert [(a.row, a.kind) for a in found] == [(3, "level_shift")]
    assert found[0].baseline == pytest.approx(345, rel=0.03)
    assert np.allclose(np.delete(median, 3), 345, rtol=0.03)


def test_a_shift_that_keeps_coming_back_is_one_anomaly_per_episode(rng):
    x = 300 + 3 * rng.standard_normal((3000, 1))
    for start in (300, 600, 900, 2000):
        x[start:start + 60] -= 60  # the same fault four times; the last after a long calm
    found = feed_group(DetectorBank("power_w", BankConfig(episode_s=900.0)), x)
    assert [a.first_seen for a in found] == [300, 2000]


def test_heavy_tailed_noise_over_hours_gives_no_anomaly(rng):
    x = power(rng, 4 * 3600, 4)
    bank = DetectorBank("power_w")
    assert feed_group(bank, x, JOB[:4]) == []
    assert bank.suppressed["spike_quiet"] > 0  # its spikes were seen, and are its normal


def test_before_issue_16_the_same_heavy_tailed_noise_gave_many(rng):
    old = BankConfig(z_spike=6.0, confirm=3, min_effect=0.0,
                     spike_quiet_s=0.0, episode_s=0.0, peer_share=0.0,
                     cp_threshold=10.0, burst_ratio=1e9)
    assert len(feed_group(DetectorBank("power_w", old), power(rng, 3600, 4))) > 10


def test_a_burst_of_noise_on_both_sides_is_no_level_shift(rng):
    x = 300 + 3 * rng.standard_normal((800, 1))
    x[400:420, 0] += np.where(np.arange(20) % 2 == 0, 40.0, -40.0)  # +-13 sigma, alternating
    found = feed_group(DetectorBank("power_w", BankConfig(spike_quiet_s=0.0)), x)
    assert all(a.kind != "level_shift" for a in found)


def test_a_departure_under_min_effect_is_not_reported_however_many_scales(rng):
    util = np.minimum(100.0, 99.6 + 0.2 * rng.standard_normal((900, 2)))
    util[400:, 0] -= 3.0  # 15 scales, but 3 % of 100: not news
    util[400:, 1] -= 30.0
    found = feed_group(DetectorBank("util", BankConfig(direction="down")), util)
    assert [(a.row, a.kind) for a in found] == [(1, "level_shift")]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_collapse_shift_and_slow_drift_are_found_among_heavy_tailed_peers(seed):
    rng = np.random.default_rng(seed)
    x = power(rng, 7200, 8)
    x[3000:, 1] = 70.0  # collapsed
    x[3000:, 2] *= 0.8  # 20 % level shift
    x[2000:5600, 3] *= 1 - 0.2 * np.arange(3600) / 3600  # -20 % over an hour
    x[5600:, 3] *= 0.8
    found = feed_group(DetectorBank("power_w"), x, JOB[:8])
    first = {a.row: a for a in reversed(found)}
    assert sorted(first) == [1, 2, 3]
    assert first[1].ts <= 3010 and first[2].ts <= 3010
    assert 2000 < first[3].ts <= 5600


def test_a_gpu_that_stays_down_after_the_job_s_checkpoint_dip_is_reported_once_peers_are_back(
        rng):
    x = power(rng, 1000, 16)
    x[400:440] = 70.0
    x[400:, 7] = np.where(np.arange(400, 1000) < 440, 70.0, 240.0)  # back at -20 % only
    found = feed_group(DetectorBank("power_w"), x, JOB)
    [(row, kind, first, ts)] = [(a.row, a.kind, a.first_seen, a.ts) for a in found]
    assert (row, kind) == (7, "level_shift") and first <= 410
    assert ts <= 400 + BankConfig().relearn_after + 30


def test_a_drift_of_one_gpu_right_after_the_job_s_checkpoint_dip_is_still_found(rng):
    x = power(rng, 5400, 8)
    x[1800:1840] = 70.0  # the job's checkpoint
    x[1900:, 2] *= 1 - 0.2 * np.minimum(1, np.arange(3500) / 3600)
    found = feed_group(DetectorBank("power_w"), x, JOB[:8])
    assert [a.row for a in found][:1] == [2] and 1900 < found[0].ts <= 1900 + 1800
