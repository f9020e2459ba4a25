"""The worker's /metrics: each health probe's figures as Prometheus metrics, no broker needed."""

from __future__ import annotations

import urllib.request
from collections import Counter

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trainguard.errors import ConfigError
from trainguard.metrics_http import serve_metrics
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.metrics import WorkerMetrics, WorkerSample
from trainguard.pipeline.publish import PublishCounts
from trainguard.pipeline.sinks.store_sink import SinkCounters
from trainguard.pipeline.store.url import StoreUrl

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _scrape(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed back with prometheus_client's own text parser."""
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _sink() -> SinkCounters:
    sink = SinkCounters(batches=3, rows=40, lines=900, retries=2, outages=1, store_down=True,
                        rejected={"clock": 4})
    for seconds in (0.003, 0.02, 0.02, 7.0):
        sink.batch_seconds.observe(seconds)
    return sink


def _sample(**kw: object) -> WorkerSample:
    fields: dict = dict(
        accepted=1000, rejected={"not_json": 2, "unauthenticated": 5}, sink=_sink(),
        lag={("tg.steps.v1", 1): 40, ("tg.gpu-samples.v1", 0): -3},
        extra={"alerts_queued": 2.0, "alerts_firing": 1.0, "deliveries_failed_total": 3.0,
               "stage_errors_consistency": 6.0, "alert_stage_errors_alerts": 1.0,
               "auth_verified": 9.0, "auth_verified_kid_k1": 9.0, "auth_failed_bad_mac": 5.0,
               "consistency_jobs_evicted": 7.0, "baseline_quiet_taken": 90.0,
               "baseline_quiet_passed": 10.0, "state_snapshot_rounds": 12.0,
               "state_snapshot_rounds_failed": 2.0, "state_snapshot_rounds_abandoned": 1.0,
               "state_snapshot_last_round_s": 1.5},
        published=PublishCounts(dead_letters=Counter({"not_json": 2, "delivery_failed": 3}),
                                findings=Counter({"param_divergence": 2}),
                                findings_cleared=Counter({"param_divergence": 1}), anomalies=8),
    )
    fields.update(kw)
    return WorkerSample.of(1_795_000_000.0, **fields)


def test_before_the_first_probe_a_scrape_shows_only_who_the_worker_is() -> None:
    metrics = WorkerMetrics("host:42", process=False)
    assert _scrape(metrics) == {("trainguard_worker_info", (("worker", "host:42"),)): 1.0}


def test_a_scrape_shows_ingest_rejects_by_stage_and_reason_and_the_store() -> None:
    metrics = WorkerMetrics("host:42", process=False)
    metrics.update(_sample())
    got = _scrape(metrics)
    assert got["trainguard_worker_last_probe_timestamp_seconds", ()] == 1_795_000_000.0
    assert got["trainguard_records_accepted_total", ()] == 1000
    assert got["trainguard_records_rejected_total",
               (("reason", "unauthenticated"), ("stage", "ingest"))] == 5
    assert got["trainguard_records_rejected_total", (("reason", "clock"), ("stage", "store"))] == 4
    assert got["trainguard_store_rows_total", ()] == 40
    assert got["trainguard_store_lines_total", ()] == 900
    assert got["trainguard_store_retries_total", ()] == 2
    assert got["trainguard_store_outages_total", ()] == 1
    assert got["trainguard_store_down", ()] == 1.0


def test_store_batch_latency_is_a_cumulative_histogram() -> None:
    metrics = WorkerMetrics("host:42", process=False)
    metrics.update(_sample())
    got = _scrape(metrics)
    bucket = "trainguard_store_batch_seconds_bucket"
    assert got[bucket, (("le", "0.005"),)] == 1
    assert got[bucket, (("le", "0.025"),)] == 3
    assert got[bucket, (("le", "5.0"),)] == 3
    assert got[bucket, (("le", "10.0"),)] == 4
    assert got[bucket, (("le", "+Inf"),)] == 4
    assert got["trainguard_store_batch_seconds_count", ()] == 4
    assert got["trainguard_store_batch_seconds_sum", ()] == pytest.approx(7.043)


def test_lag_is_per_topic_and_partition_and_never_negative() -> None:
    metrics = WorkerMetrics("host:42", process=False)
    metrics.update(_sample())
    got = _scrape(metrics)
    lag = {k[1]: v for k, v in got.items() if k[0] == "trainguard_consumer_lag"}
    assert lag == {(("partition", "1"), ("topic", "tg.steps.v1")): 40.0,
                   (("partition", "0"), ("topic", "tg.gpu-samples.v1")): 0.0}


def test_dead_letters_findings_and_alerting_are_labelled_counters_and_gauges() -> None:
    metrics = WorkerMetrics("host:42", process=False)
    metrics.update(_sample())
    got = _scrape(metrics)
    assert got["trainguard_dead_letters_total", (("reason", "delivery_failed"),)] == 3
    assert got["trainguard_findings_total", (("check", "param_divergence"),)] == 2
    assert got["trainguard_findings_cleared_total", (("check", "param_divergence"),)] == 1
    assert got["trainguard_anomalies_total", ()] == 8
    assert got["trainguard_alerts_queued", ()] == 2.0
    assert got["trainguard_alerts_firing", ()] == 1.0
    assert got["trainguard_alert_deliveries_failed_total", ()] == 3.0
    assert got["trainguard_stage_errors_total", (("stage", "consistency"),)] == 6.0
    assert got["trainguard_stage_errors_total", (("stage", "alert_alerts"),)] == 1.0
    assert got["trainguard_auth_verified_total", (("kid", "k1"),)] == 9.0
    assert got["trainguard_auth_failed_total", (("reason", "bad_mac"),)] == 5.0
    assert got["trainguard_baseline_quiet_points_taken_total", ()] == 90.0
    assert got["trainguard_baseline_quiet_points_passed_total", ()] == 10.0
    assert got["trainguard_state_snapshot_rounds_total", ()] == 12.0
    assert got["trainguard_state_snapshot_rounds_failed_total", ()] == 2.0
    assert got["trainguard_state_snapshot_rounds_abandoned_total", ()] == 1.0
    assert got["trainguard_state_snapshot_last_round_s", ()] == 1.5
    # A figure without a metric of its own is still exported, under its health name.
    assert got["trainguard_consistency_jobs_evicted", ()] == 7.0
    assert not any(name == "trainguard_auth_verified" for name, _ in got)  # the kids' sum


def test_a_sample_is_a_copy_the_stages_do_not_change_afterwards() -> None:
    sink, rejected = _sink(), {"not_json": 2}
    published = PublishCounts(dead_letters=Counter({"not_json": 2}))
    sample = WorkerSample.of(1.0, accepted=1, rejected=rejected, sink=sink, lag={},
                             published=published)
    sink.rows += 1
    sink.rejected["clock"] += 1
    sink.batch_seconds.observe(1.0)
    rejected["not_json"] += 1
    published.dead_letters["not_json"] += 1
    assert sample.sink.rows == 40 and sample.sink.rejected == {"clock": 4}
    assert sample.sink.batch_seconds.count == 4
    assert sample.rejected == {"not_json": 2}
    assert sample.published.dead_letters == {"not_json": 2}


def test_metrics_are_served_over_http_on_the_port_asked_for() -> None:
    metrics = WorkerMetrics("host:42")
    metrics.update(_sample())
    served = serve_metrics(metrics.registry, 0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{served.port}/metrics"
        with _OPENER.open(url, timeout=5) as resp:
            body = resp.read().decode()
    finally:
        served.close()
    assert 'trainguard_worker_info{worker="host:42"} 1.0' in body
    assert "trainguard_records_accepted_total 1000.0" in body
    assert "process_start_time_seconds" in body  # the process collector is registered


def test_worker_config_refuses_a_metrics_port_out_of_range() -> None:
    with pytest.raises(ConfigError, match="metrics_port=70000"):
        WorkerConfig(bootstrap="k:9092", store=StoreUrl.parse("chdb:///tmp/x"),
                     metrics_port=70000)
    assert WorkerConfig(bootstrap="k:9092", store=StoreUrl.parse("chdb:///tmp/x")).metrics_port \
        is None  # off unless asked for
