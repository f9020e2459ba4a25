"""JobHistory: a job's timeline of job-level values, cut where a resume replays steps."""

import math

import numpy as np
import pytest

from trainguard.pipeline.consistency.history import JobHistory


def filled(capacity: int, steps: range) -> JobHistory:
    h = JobHistory(capacity)
    for s in steps:
        h.record(s, lr=s * 1e-5, loss=10.0 - s * 0.01, grad_norm=1.0, world_size=8)
    return h


def test_a_snapshot_holds_the_recorded_steps_in_order():
    view = filled(16, range(1, 11)).snapshot()
    assert view.steps.tolist() == list(range(1, 11))
    assert view.lr[view.index(4)] == pytest.approx(4e-5)
    assert (view.first_step, view.last_step, len(view)) == (1, 10, 10)


def test_a_step_seen_again_cuts_the_timeline_there():
    h = filled(16, range(1, 11))
    h.record(7, lr=1.0, loss=2.0, grad_norm=3.0, world_size=8)
    view = h.snapshot()
    assert view.steps.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert view.lr[-1] == 1.0 and h.rewound == 4 and h.last_step == 7


def test_only_the_newest_capacity_steps_are_kept():
    h = filled(8, range(1, 101))
    view = h.snapshot()
    assert view.steps.tolist() == list(range(93, 101))
    assert len(h) <= 16  # at most twice the capacity is ever held


def test_a_snapshot_is_a_copy_the_live_history_cannot_change():
    h = filled(16, range(1, 6))
    view = h.snapshot()
    h.record(3, lr=9.0, loss=9.0, grad_norm=9.0, world_size=4)
    assert view.steps.tolist() == [1, 2, 3, 4, 5] and view.lr[2] == pytest.approx(3e-5)


def test_missing_values_stay_nan_and_unknown_steps_have_no_index():
    h = JobHistory(4)
    h.record(5, lr=math.nan, loss=1.0, grad_norm=math.nan, world_size=2)
    view = h.snapshot()
    assert np.isnan(view.lr[0]) and view.index(6) is None and view.index(5) == 0
    assert JobHistory(4).snapshot().last_step == -1


def test_capacity_below_two_is_refused():
    with pytest.raises(ValueError, match="capacity must be >= 2 steps, got 1"):
        JobHistory(1)
