import numpy as np
import pytest

from trainguard.pipeline.detect.baseline import (
    Ewm,
    EwmLag1,
    RobustWindow,
    SortedWindow,
    unique_rounds,
)


def test_ewm_alpha_halves_a_samples_weight_after_one_half_life():
    ewm = Ewm(1, half_life=10)
    assert (1 - ewm.alpha) ** 10 == pytest.approx(0.5)


def test_ewm_is_the_plain_mean_and_variance_while_young():
    ewm = Ewm(2, half_life=1000)
    x = np.array([[1.0, 5.0], [3.0, 5.0], [8.0, 5.0]])
    for tick in x:
        ewm.update(np.array([0, 1]), tick)
    assert ewm.mean[:2] == pytest.approx(x.mean(axis=0))
    assert ewm.var[:2] == pytest.approx(x.var(axis=0))
    assert ewm.n[:2].tolist() == [3, 3]


def test_ewm_tracks_mean_and_std_of_a_long_series(rng):
    ewm = Ewm(1, half_life=200)
    for v in 10 + 3 * rng.standard_normal(5000):
        ewm.update(np.array([0]), np.array([v]))
    assert ewm.mean[0] == pytest.approx(10, abs=0.6)
    assert np.sqrt(ewm.var[0]) == pytest.approx(3, rel=0.15)


def test_ewm_lag1_estimates_the_autocorrelation_of_ar1_noise(rng):
    ewm = EwmLag1(1, half_life=2000)
    v = 0.0
    for e in rng.standard_normal(20000):
        v = 0.6 * v + e
        ewm.update(np.array([0]), np.array([v]))
    assert ewm.rho(np.array([0]))[0] == pytest.approx(0.6, abs=0.08)


@pytest.mark.parametrize("size", [60, 7, 8])
def test_robust_window_stats_match_numpy_on_partial_full_and_tied_rows(rng, size):
    win = RobustWindow(5, size=size)
    rows = np.arange(5)
    data = np.round(rng.normal(size=(2 * size, 5)) * 3)  # ties on purpose
    for k, tick in enumerate(data):
        win.push(rows[: 1 + k % 5], tick[: 1 + k % 5])  # rows fill at different speeds
    median, scale, count = win.stats(rows)
    buf = win.buf[:5]
    expected = np.nanmedian(buf, axis=1)
    mad = np.nanmedian(np.abs(buf - expected[:, None]), axis=1)
    assert np.array_equal(median, expected)
    assert np.allclose(scale, 1.4826 * mad)
    assert count.tolist() == np.sum(~np.isnan(buf), axis=1).tolist()


def test_robust_window_median_barely_moves_for_one_huge_outlier(rng):
    win = RobustWindow(1, size=60)
    for v in rng.standard_normal(59):
        win.push(np.array([0]), np.array([v]))
    before, scale_before, _ = win.stats(np.array([0]))
    win.push(np.array([0]), np.array([1e9]))
    after, scale_after, _ = win.stats(np.array([0]))
    assert abs(after[0] - before[0]) < 0.2 and scale_after[0] < 1.2 * scale_before[0]


def test_robust_window_of_an_empty_row_is_nan():
    median, scale, count = RobustWindow(3).stats(np.array([1]))
    assert np.isnan(median[0]) and np.isnan(scale[0]) and count[0] == 0


def test_unique_rounds_put_the_kth_occurrence_of_a_row_in_round_k():
    rows = np.array([4, 1, 4, 4, 2, 1])
    rounds = unique_rounds(rows)
    assert [rows[r].tolist() for r in rounds] == [[1, 2, 4], [1, 4], [4]]
    assert [r.tolist() for r in rounds] == [[1, 4, 0], [5, 2], [3]]


def test_unique_rounds_order_a_rows_points_by_event_time():
    rows = np.array([0, 0, 0])
    ts = np.array([3.0, 1.0, 2.0])
    assert [r.tolist() for r in unique_rounds(rows, ts)] == [[1], [2], [0]]


def test_unique_rounds_of_a_batch_without_repeats_is_one_round():
    assert [r.tolist() for r in unique_rounds(np.array([3, 0, 2]))] == [[0, 1, 2]]


def test_grow_makes_room_for_twice_the_rows_asked_and_keeps_rows():
    ewm = Ewm(4, half_life=5)
    ewm.update(np.array([3]), np.array([7.0]))
    ewm.grow(5)
    assert ewm.capacity == 10 and ewm.mean[3] == 7.0 and ewm.n[4] == 0
    ewm.grow(11)  # twice the capacity when that is more
    assert ewm.capacity == 22 and ewm.mean[3] == 7.0


def test_a_second_batch_of_new_rows_fits_without_moving_the_first():
    # A fleet's first tick registers its entities in two batches or more: the arrays the
    # first batch grew must take the second as they are, not be copied into larger ones.
    win = SortedWindow(1, size=5)
    win.grow(64_000)
    win.push(np.array([63_999]), np.array([4.0]))
    buf, order = win.buf, win.sorted
    win.grow(80_000)
    assert win.buf is buf and win.sorted is order and win.capacity == 128_000
    assert win.count[63_999] == 1 and np.isnan(win.buf[79_999]).all()
    assert not win.fresh[64_000:80_000].any()


def test_grow_writes_only_rows_in_use_and_empties_each_row_when_first_used():
    ewm = Ewm(4, half_life=5)
    ewm.update(np.array([3]), np.array([7.0]))
    ewm.grow(5)
    assert (ewm.capacity, ewm.filled) == (10, 5)
    ewm.mean[5:], ewm.n[5:] = 99.0, 99  # what unwritten memory may hold
    ewm.grow(7)
    assert ewm.mean[[5, 6]].tolist() == [0.0, 0.0] and ewm.n[[5, 6]].tolist() == [0, 0]
    assert ewm.mean[3] == 7.0 and ewm.mean[7] == 99.0  # row 7 is not in use yet
    assert {len(a) for a in ewm.state().values()} == {7}  # snapshots hold rows in use only


def test_a_window_restored_from_a_snapshot_of_rows_in_use_grows_on():
    win = RobustWindow(2, size=5)
    win.grow(3)  # room for 6 rows, 3 in use
    win.push(np.array([2]), np.array([4.0]))
    restored = RobustWindow(1, size=5)
    restored.load_state(win.state())
    assert (restored.capacity, restored.filled) == (3, 3)
    restored.grow(5)
    assert restored.count[[2, 3, 4]].tolist() == [1, 0, 0]
    assert np.isnan(restored.buf[4]).all()


def test_state_rows_round_trip_into_other_rows():
    win = RobustWindow(4, size=5)
    for v in range(7):
        win.push(np.array([1, 2]), np.array([v, -v], dtype=float))
    other = RobustWindow(1, size=5)
    other.load_state_rows(np.array([9, 0]), win.state_rows(np.array([1, 2])))
    assert np.array_equal(other.stats(np.array([9, 0]))[0], win.stats(np.array([1, 2]))[0])


def test_load_state_rejects_a_window_of_another_size():
    with pytest.raises(ValueError, match="buf"):
        RobustWindow(2, size=5).load_state(RobustWindow(2, size=6).state())
