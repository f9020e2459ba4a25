"""bench/warmup.py: the figures it prints come from a real run of the stages."""

from __future__ import annotations

from bench.warmup import warmup


def test_a_small_fleet_gives_a_time_per_tick_and_the_memory_its_state_holds():
    figures = warmup(nodes=16, ticks=2)
    assert set(figures) == {"tick0", "tick1", "rss_mib", "state_mib"}
    assert figures["tick0"] > 0 and figures["tick1"] > 0
    # 16 nodes' GPUs and ranks hold rows: some state, and a process far bigger than it.
    assert 0 < figures["state_mib"] < figures["rss_mib"]
