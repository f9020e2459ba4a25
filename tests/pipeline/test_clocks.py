"""EventClocks: a key's event time, moved on by the wall clock, never by another key."""

import math

from tests.pipeline.fakes import Clock
from trainguard.pipeline.clocks import EventClocks

T0 = 1_800_000_000.0


def test_a_key_runs_on_its_own_event_time_then_at_wall_clock_speed():
    wall = Clock(1_700_000_000.0)
    clocks = EventClocks(wall)
    clocks.advance("a", T0)
    assert clocks.now("a") == T0
    wall.advance(30)
    assert clocks.now("a") == T0 + 30 and clocks.idle_for("a") == 30
    clocks.advance("a", T0 + 100)  # data ahead of the extrapolation wins
    assert clocks.now("a") == T0 + 100 and clocks.idle_for("a") == 0
    wall.advance(10)
    clocks.advance("a", T0 + 105)  # newer data behind the extrapolation: alive, no going back
    assert clocks.now("a") == T0 + 110 and clocks.idle_for("a") == 0


def test_another_keys_future_time_moves_nothing_of_this_key():
    wall = Clock()
    clocks = EventClocks(wall)
    clocks.advance("a", T0)
    clocks.advance("b", T0 + 1e9)
    assert clocks.now("a") == T0 and clocks.now("c") == -math.inf


def test_older_and_non_finite_times_change_nothing_and_keys_are_bounded():
    wall = Clock()
    clocks = EventClocks(wall, max_keys=2)
    clocks.advance("a", T0)
    clocks.advance("a", T0 - 50)
    clocks.advance("a", math.inf)
    assert clocks.now("a") == T0
    clocks.advance("b", T0)
    clocks.advance("c", T0)
    assert sorted(clocks) == ["b", "c"] and clocks.idle_for("a") == math.inf
