"""bench/intake_cost.py: its figures come from real runs of the intake builders."""

from __future__ import annotations

from bench.intake_cost import intake_cost


def test_a_small_fleet_gives_a_cost_for_each_builder():
    figures = intake_cost(nodes=20, rounds=2)
    assert set(figures) == {"samples", "steps"}
    assert figures["samples"] > 0 and figures["steps"] > 0
