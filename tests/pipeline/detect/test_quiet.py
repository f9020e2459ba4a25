"""The compiled quiet path leaves exactly the state, and finds exactly what, the numpy path does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from trainguard.pipeline.detect import BankConfig, DetectorBank
from trainguard.pipeline.detect.quiet import AVAILABLE

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="numba not installed")

# Small windows and short warm-ups reach every state of the machine within a few hundred
# points; the default config is the one the worker runs.
_SMALL = BankConfig(window=12, min_samples=6, cp_after=20, relearn_after=30, half_life=20.0,
                    anchor_half_life=60.0, confirm=3, clear=3, spike_quiet_s=5.0)


def _stream(seed: int, rows: int, ticks: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches of (rows, values, ts): noise with spikes, shifts, drifts, bursts and bad points."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(-50, 500, rows)
    noise = rng.uniform(0.0, 5.0, rows)
    noise[: rows // 8] = 0.0  # flat series: the scale floors
    drift = np.zeros(rows)
    batches = []
    for k in range(ticks):
        x = level + noise * rng.standard_t(3, rows) + drift
        drift += np.where(rng.random(rows) < 0.01, rng.normal(0, 2, rows), 0.0)
        spike = rng.random(rows) < 0.01
        x[spike] += rng.choice([-1, 1], spike.sum()) * rng.uniform(10, 100, spike.sum())
        shift = rng.random(rows) < 0.003
        level[shift] *= rng.choice([0.5, 1.5], shift.sum())
        burst = rng.random(rows) < 0.02
        x[burst] += noise[burst] * rng.normal(0, 10, burst.sum())
        x[rng.random(rows) < 0.005] = np.nan
        ts = np.full(rows, float(k))
        ts[rng.random(rows) < 0.005] = k - 1.0  # replayed: skipped
        r = np.arange(rows)
        order = rng.permutation(rows)
        cut = rng.integers(1, rows)
        for part in (order[:cut], order[cut:]):
            batches.append((r[part], x[part], ts[part]))
        if k % 17 == 3:  # a row twice in one batch: applied in rounds, in event time
            dup = rng.integers(0, rows, 5)
            batches.append((np.r_[dup, dup], np.r_[x[dup], x[dup] + 1.0],
                            np.r_[ts[dup] + 0.5, ts[dup] + 0.25]))
    return batches


def _assert_same(a: DetectorBank, b: DetectorBank) -> None:
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys()
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)
    assert a.suppressed == b.suppressed


@pytest.mark.parametrize("config", [
    _SMALL,
    replace(_SMALL, direction="up"),
    replace(_SMALL, direction="down", min_effect=0.0),
    BankConfig(),
])
def test_compiled_path_matches_numpy_path_bitwise(config: BankConfig) -> None:
    fast = DetectorBank("m", config, capacity=4, compiled=True)
    slow = DetectorBank("m", config, capacity=4, compiled=False)
    assert fast._quiet is not None and slow._quiet is None
    found = 0
    for rows, x, ts in _stream(seed=hash(config) % 1000, rows=64,
                               ticks=200 if config.window < 60 else 400):
        groups = rows % 4
        got = fast.update(rows, x, ts, groups=groups)
        want = slow.update(rows, x, ts, groups=groups)
        assert got == want
        found += len(got)
    _assert_same(fast, slow)
    # The stream must exercise both paths, and find things, for the comparison to mean much.
    assert found > 0
    assert fast._quiet.taken > fast._quiet.passed > 0


def test_quiet_path_keeps_up_after_state_moves_rows() -> None:
    """Rows reset, re-grown and loaded from another bank's state go on matching."""
    fast = DetectorBank("m", _SMALL, capacity=2, compiled=True)
    slow = DetectorBank("m", _SMALL, capacity=2, compiled=False)
    batches = _stream(seed=7, rows=32, ticks=120)
    for i, (rows, x, ts) in enumerate(batches):
        if i == 100:
            for bank in (fast, slow):
                bank.reset_rows(np.arange(0, 32, 3))
        if i == 160:
            moved = slow.state_rows(np.arange(8))
            for bank in (fast, slow):
                bank.load_state_rows(np.arange(40, 48), moved)
        assert fast.update(rows, x, ts) == slow.update(rows, x, ts)
    _assert_same(fast, slow)


def test_page_hinkley_banks_take_the_numpy_path() -> None:
    bank = DetectorBank("m", BankConfig(changepoint="page-hinkley"), compiled=True)
    assert bank._quiet is None


@pytest.mark.parametrize("size", [3, 4, 5, 12, 59, 60])
def test_median_and_mad_of_a_sorted_row_are_the_window_stats(size: int) -> None:
    """Ties (small integers) and both parities of the window size."""
    from trainguard.pipeline.detect.baseline import MAD_TO_SIGMA, RobustWindow
    from trainguard.pipeline.detect.compiled import median_mad, replace_sorted

    rng = np.random.default_rng(size)
    window = RobustWindow(200, size)
    window.buf[:] = rng.integers(0, 4, (200, size)).astype(float)
    window.buf[100:] += rng.normal(0, 1e-3, (100, size))
    window.count[:] = size
    median, mad_scale, _ = window.stats(np.arange(200))
    for row in range(200):
        s = np.sort(window.buf[row])
        m, mad = median_mad(s)
        assert (m, MAD_TO_SIGMA * mad) == (median[row], mad_scale[row])
        old, new = window.buf[row, rng.integers(size)], float(rng.integers(-1, 5))
        replace_sorted(s, old, new)
        want = np.sort(np.r_[np.delete(window.buf[row], np.flatnonzero(
            window.buf[row] == old)[0]), new])
        np.testing.assert_array_equal(s, want)


@pytest.mark.parametrize("ring", ["window", "recent"])
def test_a_damaged_ring_position_raises_as_on_the_numpy_path(ring: str) -> None:
    """Compiled code checks no bounds: such a row must reach the path that does."""
    banks = [DetectorBank("m", _SMALL, capacity=8, compiled=c) for c in (True, False)]
    for bank in banks:
        for k in range(20):
            bank.update(np.arange(8), np.full(8, 50.0 + k % 3), np.full(8, float(k)))
        getattr(bank, ring).pos[3] = 10**9
        with pytest.raises(IndexError):
            bank.update(np.arange(8), np.full(8, 51.0), np.full(8, 100.0))


@pytest.mark.parametrize(("field", "value"), [("pos", 12), ("pos", -1), ("count", 13),
                                              ("count", -2)])
@pytest.mark.parametrize("whole", [True, False])
def test_a_snapshot_with_a_ring_index_out_of_range_is_refused(field: str, value: int,
                                                               whole: bool) -> None:
    """The loader checks ring positions and counts, before any path indexes with them."""
    bank = DetectorBank("m", _SMALL, capacity=8)
    bank.update(np.arange(8), np.full(8, 50.0), np.zeros(8))
    state = bank.state() if whole else bank.state_rows(np.arange(8))
    state[f"window.{field}"] = state[f"window.{field}"].copy()
    state[f"window.{field}"][2] = value
    fresh = DetectorBank("m", _SMALL, capacity=8)
    with pytest.raises(ValueError, match=f"state '{field}' holds {value}, outside 0..1[12]"):
        if whole:
            fresh.load_state(state)
        else:
            fresh.load_state_rows(np.arange(8), state)


def test_the_quiet_path_counts_the_points_it_takes_and_passes_on() -> None:
    bank = DetectorBank("m", _SMALL, capacity=8)
    assert bank.quiet_points() == (0, 0)
    fed = 0
    for k in range(40):
        bank.update(np.arange(8), np.full(8, 50.0 + k % 3), np.full(8, float(k)))
        fed += 8
    taken, passed = bank.quiet_points()
    assert taken > 0 and taken + passed == fed  # every point of a cusum bank meets it once
    before = taken
    bank.update(np.arange(8), np.full(8, 5000.0), np.full(8, 40.0))  # a spike: passed on
    assert bank.quiet_points() == (before, passed + 8)
    assert DetectorBank("m", _SMALL, capacity=8, compiled=False).quiet_points() == (0, 0)
