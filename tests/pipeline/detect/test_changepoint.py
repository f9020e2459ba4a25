import numpy as np
import pytest

from trainguard.pipeline.detect.changepoint import Cusum, PageHinkley


def run(det, z, rows=None):
    z = np.asarray(z, dtype=float)
    z = z[:, None] if z.ndim == 1 else z
    rows = np.arange(z.shape[1]) if rows is None else rows
    out = []
    for k, tick in enumerate(z):
        a = det.update(rows, tick, np.full(len(rows), float(k)))
        out += [(int(rows[i]), k, int(a.sign[i]), float(a.onset[i]), float(a.mean[i]))
                for i in np.flatnonzero(a.sign)]
    return out


@pytest.mark.parametrize("make", [Cusum, PageHinkley])
def test_no_alarm_on_standard_normal_noise(rng, make):
    assert run(make(20), rng.standard_normal((5000, 20))) == []


@pytest.mark.parametrize("make", [Cusum, PageHinkley])
@pytest.mark.parametrize("step", [2.0, -2.0])
def test_a_two_sigma_step_alarms_within_20_points_with_its_onset(rng, make, step):
    z = rng.standard_normal(600)
    z[400:] += step
    _, k, sign, onset, mean = run(make(1), z[:420])[0]
    assert sign == np.sign(step) and 400 <= k < 420
    # The onset is the sum's last zero: noise just before the step can make it early.
    assert 385 <= onset <= 408 and mean == pytest.approx(abs(step), abs=1.2)


@pytest.mark.parametrize("make", [Cusum, PageHinkley])
def test_direction_up_ignores_a_drop(rng, make):
    z = rng.standard_normal(300)
    z[100:] -= 3.0
    assert run(make(1, direction="up"), z) == []


def test_cusum_restarts_after_an_alarm():
    det = Cusum(1, k=0.5, h=4.0)
    alarms = run(det, np.full(20, 1.5))
    # 1.0 per point over the allowance: an alarm on every 5th point, not every point.
    assert [k for _, k, _, _, _ in alarms] == [4, 9, 14, 19]


def test_rows_are_independent(rng):
    z = rng.standard_normal((200, 3))
    z[100:, 1] += 3.0
    assert {row for row, *_ in run(Cusum(3), z)} == {1}


def test_unknown_direction_is_rejected():
    with pytest.raises(ValueError, match="sideways"):
        Cusum(1, direction="sideways")  # type: ignore[arg-type]
