"""The agent's metrics: its heartbeat's counters in node_exporter's textfile and on /metrics."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agents.test_daemon import RecordingTransport, _config
from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.daemon import NodeAgent
from trainguard.agents.metrics import TEXTFILE_NAME, start_metrics
from trainguard.errors import ConfigError
from trainguard.schemas.records import AgentCounters, Heartbeat

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_GAUGE_NAMES = {"send_latency_ms_p50": "send_latency_p50_seconds",
                "send_latency_ms_max": "send_latency_max_seconds",
                "cpu_pct": "cpu_percent", "rss_bytes": "resident_memory_bytes"}


def _heartbeat(**counters: object) -> Heartbeat:
    return Heartbeat(cluster="c1", node="node-a", ts=1_795_000_100.0, seq=3, agent_id="a1",
                     agent_version="0.1.0", uptime_s=15.0, backend="nvml", gpu_count=8,
                     counters=AgentCounters(**counters))


def _parse(text: str) -> dict[str, tuple[dict[str, str], float, str]]:
    """Sample name → (labels, value, family type), by prometheus_client's text parser."""
    return {s.name: (s.labels, s.value, family.type)
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_textfile_holds_every_heartbeat_counter_and_parses(tmp_path: Path) -> None:
    outputs = start_metrics(_config(metrics_textfile_dir=tmp_path))
    assert outputs is not None
    every = {f: 7 for f in AgentCounters.__struct_fields__}
    every.update(send_latency_ms_p50=12.0, send_latency_ms_max=250.0, cpu_pct=1.5)
    outputs.on_heartbeat(_heartbeat(**every))
    got = _parse((tmp_path / TEXTFILE_NAME).read_text())
    for field in AgentCounters.__struct_fields__:
        name = _GAUGE_NAMES.get(field, field)
        assert f"trainguard_agent_{name}" in got or f"trainguard_agent_{name}_total" in got, field
    labels, value, kind = got["trainguard_agent_spool_dropped_total"]
    assert (labels, value, kind) == ({"cluster": "c1", "node": "node-a"}, 7.0, "counter")
    assert got["trainguard_agent_spool_depth"][1:] == (7.0, "gauge")
    assert got["trainguard_agent_collect_errors_total"][1] == 7.0  # NVML errors
    assert got["trainguard_agent_send_latency_max_seconds"][1] == pytest.approx(0.25)
    assert got["trainguard_agent_last_heartbeat_timestamp_seconds"][1] == 1_795_000_100.0
    assert got["trainguard_agent_info"][0]["version"] == "0.1.0"
    assert not any(name.startswith("process_") for name in got)  # the node's, not ours
    assert os.listdir(tmp_path) == [TEXTFILE_NAME]  # the temporary file was renamed


def test_a_latency_not_measured_this_interval_is_left_out(tmp_path: Path) -> None:
    outputs = start_metrics(_config(metrics_textfile_dir=tmp_path))
    assert outputs is not None
    outputs.on_heartbeat(_heartbeat(spool_depth=3))
    got = _parse((tmp_path / TEXTFILE_NAME).read_text())
    assert "trainguard_agent_send_latency_p50_seconds" not in got
    assert got["trainguard_agent_spool_depth"][1] == 3.0


def test_each_heartbeat_rewrites_the_file(tmp_path: Path) -> None:
    outputs = start_metrics(_config(metrics_textfile_dir=tmp_path, heartbeat_interval_s=1.0))
    assert outputs is not None
    agent = NodeAgent(_config(heartbeat_interval_s=1.0), SimulatedGpus("node-a", 2),
                      RecordingTransport(), on_heartbeat=outputs.on_heartbeat)
    path = tmp_path / TEXTFILE_NAME
    agent.tick(1_795_000_100.0)
    assert _parse(path.read_text())["trainguard_agent_batches_sent_total"][1] == 1.0
    agent.tick(1_795_000_101.0)
    got = _parse(path.read_text())
    assert got["trainguard_agent_batches_sent_total"][1] == 2.0
    assert got["trainguard_agent_last_heartbeat_timestamp_seconds"][1] == 1_795_000_101.0


def test_a_textfile_directory_that_is_missing_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.*textfile.directory"):
        start_metrics(_config(metrics_textfile_dir=tmp_path / "missing"))


def test_a_failed_write_is_counted_and_the_next_heartbeat_tries_again(tmp_path: Path) -> None:
    directory = tmp_path / "tf"
    directory.mkdir()
    outputs = start_metrics(_config(metrics_textfile_dir=directory))
    assert outputs is not None and outputs.textfile is not None
    directory.rmdir()  # node_exporter's directory vanished under the agent
    outputs.on_heartbeat(_heartbeat())
    assert outputs.textfile.errors == 1
    directory.mkdir()
    outputs.on_heartbeat(_heartbeat(spool_depth=1))
    assert outputs.textfile.errors == 1
    assert _parse((directory / TEXTFILE_NAME).read_text())["trainguard_agent_spool_depth"][1] == 1


def test_no_metrics_configured_starts_nothing() -> None:
    assert start_metrics(_config()) is None


def test_the_port_serves_the_same_metrics_and_the_process(tmp_path: Path) -> None:
    outputs = start_metrics(_config(metrics_port=0, metrics_addr="127.0.0.1"))
    assert outputs is not None and outputs.server is not None
    try:
        outputs.on_heartbeat(_heartbeat(spool_bytes=4096))
        with _OPENER.open(f"http://127.0.0.1:{outputs.server.port}/metrics", timeout=5) as r:
            got = _parse(r.read().decode())
    finally:
        outputs.close()
    assert got["trainguard_agent_spool_bytes"][1] == 4096.0
    assert "process_resident_memory_bytes" in got

