"""The worker writes its own health to ``pipeline_health`` (the pipeline dashboard's data)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_a_running_worker_reports_rates_lag_and_sink_latency(worker_process):
    worker_process.start()
    got = worker_process.wait_for(
        "SELECT uniqExact(metric) FROM {database}.pipeline_health WHERE metric IN "
        "('ingest_msgs_per_s', 'records_per_s', 'consumer_lag', 'sink_batch_ms', "
        "'dead_letters_total', 'alerts_firing')", 6, timeout=60)
    assert got == 6, worker_process.log_tail()
    lag = worker_process.query(
        "SELECT DISTINCT topic FROM {database}.pipeline_health WHERE metric = 'consumer_lag'"
    ).rows
    # One row per partition of every topic the worker reads, the inputs among them.
    assert any(str(t[0]).endswith(".steps.v1") for t in lag), lag
