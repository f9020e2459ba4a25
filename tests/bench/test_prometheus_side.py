"""The side-by-side table compares only runs that kept up."""

from __future__ import annotations

from bench.prometheus_side import _table

PROM = {"nodes": 500, "cpu_pct": 25.0, "cpu_ms_per_1000": 62.5, "scrapes_run": 1.0,
        "scrape_success": 1.0, "cpu_ms_per_1000_ok": 62.5, "scrape_avg_ms": 4.0,
        "scrape_max_ms": 200.0, "samples_per_s": 106_500.0, "want_samples_per_s": 106_500.0,
        "exporter_cpu_pct": 5.0}


def _worker(end_lag_msgs: float) -> dict[str, float]:
    return {"nodes": 500, "cpu_pct": 50.0, "cpu_ms_per_1000": 125.0,
            "end_lag_msgs": end_lag_msgs}


def test_a_worker_that_kept_up_gets_its_ratio_to_prometheus() -> None:
    row = _table([PROM], {500: _worker(end_lag_msgs=1_000)}).splitlines()[2]
    assert row.endswith("| 2.00 |")
    assert "fell behind" not in row


def test_a_worker_that_fell_behind_is_marked_and_gets_no_ratio() -> None:
    row = _table([PROM], {500: _worker(end_lag_msgs=18_562)}).splitlines()[2]
    assert "fell behind: 18,562 messages unstored" in row
    assert row.endswith("| – (not comparable) |")


def test_without_the_worker_the_table_has_prometheus_columns_only() -> None:
    head, rule, row = _table([PROM], {}).splitlines()
    assert head.count("|") == rule.count("|") == row.count("|") == 11
    assert "**62.5**" in row
