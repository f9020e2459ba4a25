"""The worker writes its own health to ``pipeline_health`` (the pipeline dashboard's data)
and serves the same figures on ``/metrics`` for Prometheus."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_running_worker_reports_rates_lag_and_sink_latency(worker_process):
    port = _free_port()
    worker_process.start(extra_args=["--metrics-port", str(port), "--metrics-addr", "127.0.0.1"])
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

    # The probes that wrote those rows are also the samples /metrics serves.
    with _OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    names = {s.name for s in samples}
    assert {"trainguard_worker_last_probe_timestamp_seconds", "trainguard_alerts_firing",
            "trainguard_store_batch_seconds_count", "trainguard_records_accepted_total",
            "process_start_time_seconds"} <= names, text
    topics = {s.labels["topic"] for s in samples if s.name == "trainguard_consumer_lag"}
    assert any(t.endswith(".steps.v1") for t in topics), text


def test_under_a_notify_unit_the_worker_says_ready_pings_the_watchdog_and_says_stopping(
        worker_process, tmp_path, monkeypatch):
    # What systemd does for Type=notify with WatchdogSec=2s: a datagram socket in
    # NOTIFY_SOCKET, the period in WATCHDOG_USEC (the child inherits both).
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        worker_process.start()
        seen: list[str] = []
        while seen.count("WATCHDOG=1") < 2:
            seen += sock.recv(4096).decode().splitlines()
        assert seen[0] == "READY=1", seen
        worker_process.stop()
        while "STOPPING=1" not in seen:
            seen += sock.recv(4096).decode().splitlines()
