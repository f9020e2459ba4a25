"""The agent's Prometheus metrics: its heartbeat's counters, for node_exporter and ``/metrics``.

Nothing is counted twice: each heartbeat the agent sends (:class:`~trainguard.schemas.records.
AgentCounters`: spool depth and bytes, drops, send latency, collection (NVML) errors, intake
drops, witness and claims counters) becomes the sample shown here, so Prometheus and the
``heartbeats`` table agree, and Prometheus still sees the node while Kafka is down.

Two outputs, either or both (``[metrics]`` in the agent's TOML file):

- **node_exporter's textfile collector** (``textfile_dir``): ``trainguard_agent.prom`` is
  rewritten after every heartbeat, atomically (a temporary file in the same directory, then
  ``rename``), so node_exporter never reads half a file. node_exporter's own
  ``node_textfile_mtime_seconds`` then shows when the agent last wrote it.
- **its own endpoint** (``port``): the same metrics plus the process's CPU and memory.

``trainguard_agent_last_heartbeat_timestamp_seconds`` is the agent's last word: a stale
value (the file outlives the agent) is a silent agent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, ProcessCollector, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trainguard.agents.config import AgentConfig
from trainguard.agents.ratelimit import LogLimiter
from trainguard.errors import ConfigError
from trainguard.metrics_http import MetricsServer, serve_metrics
from trainguard.schemas.records import Heartbeat

__all__ = ["TEXTFILE_NAME", "AgentMetrics", "MetricsOutputs", "TextfileWriter", "start_metrics"]

log = logging.getLogger(__name__)

#: The file the agent writes in node_exporter's textfile directory.
TEXTFILE_NAME = "trainguard_agent.prom"
_PREFIX = "trainguard_agent_"
_LABELS = ["cluster", "node"]
#: Counters that are current values, not totals: field → (metric name, scale, doc).
_GAUGES: dict[str, tuple[str, float, str]] = {
    "spool_depth": ("spool_depth", 1.0, "Records waiting in the on-disk spool for Kafka."),
    "spool_bytes": ("spool_bytes", 1.0, "Bytes of the records waiting in the spool."),
    "spool_memory_depth": ("spool_memory_depth", 1.0,
                           "Records held in memory because the spool's disk refused them."),
    "send_latency_ms_p50": ("send_latency_p50_seconds", 1e-3,
                            "Median spool append to Kafka ack, over the last heartbeat."),
    "send_latency_ms_max": ("send_latency_max_seconds", 1e-3,
                            "Slowest spool append to Kafka ack, over the last heartbeat."),
    "cpu_pct": ("cpu_percent", 1.0, "The agent's CPU, % of one core, over the last heartbeat."),
    "rss_bytes": ("resident_memory_bytes", 1.0, "The agent's resident memory."),
}
#: Help text of the counters whose name does not say enough.
_DOCS = {
    "collect_errors": "GPU collections that failed (NVML errors); that tick's sample is lost.",
    "datagrams_dropped": "Step datagrams the trainers' reporters could not hand over.",
    "steps_dropped": "Step records dropped because the agent's intake queue was full.",
    "spool_dropped": "Records discarded, oldest first, because the spool was full.",
    "send_errors": "Failed sends to Kafka (retried from the spool).",
    "dead_lettered": "Messages that can never be sent, written to the node's dead-letter file.",
    "tick_overruns": "Ticks whose collection took longer than the interval.",
    "rank_events": "Rank process exits, stops, resumes and trainers' bye/waiting queued.",
    "rank_events_dropped": "Rank events dropped because the agent's queue was full.",
    "manifests_dropped": "Code manifests dropped because the agent's queue was full.",
}


class AgentMetrics(Collector):
    """A prometheus_client collector rendering the agent's latest heartbeat."""

    def __init__(self) -> None:
        self._last: Heartbeat | None = None  # replaced whole: no lock needed

    def update(self, heartbeat: Heartbeat) -> None:
        """Show ``heartbeat``'s counters from now on."""
        self._last = heartbeat

    def collect(self) -> Iterator[Metric]:
        """The metric families of the last heartbeat (none before the first)."""
        hb = self._last
        if hb is None:
            return
        labels = [hb.cluster, hb.node]
        info = GaugeMetricFamily(f"{_PREFIX}info", "The agent's identity and version.",
                                 labels=[*_LABELS, "agent_id", "version", "backend"])
        info.add_metric([*labels, hb.agent_id, hb.agent_version, hb.backend], 1.0)
        yield info
        for name, value, doc in (
            ("last_heartbeat_timestamp_seconds", hb.ts, "When the agent last heartbeated."),
            ("uptime_seconds", hb.uptime_s, "Seconds since the agent started."),
            ("gpus", hb.gpu_count, "GPUs the agent collects from."),
        ):
            yield _one(GaugeMetricFamily(_PREFIX + name, doc, labels=_LABELS), labels, value)
        for field, value in msgspec.structs.asdict(hb.counters).items():
            if value is None:
                continue  # no figure this interval (no send, first heartbeat)
            if field in _GAUGES:
                name, scale, doc = _GAUGES[field]
                yield _one(GaugeMetricFamily(_PREFIX + name, doc, labels=_LABELS), labels,
                           value * scale)
            else:
                doc = _DOCS.get(field, f"The agent's {field.replace('_', ' ')} (heartbeat).")
                yield _one(CounterMetricFamily(_PREFIX + field, doc, labels=_LABELS), labels,
                           value)


def _one(family: GaugeMetricFamily | CounterMetricFamily, labels: list[str],
         value: float) -> Metric:
    family.add_metric(labels, float(value))
    return family


class TextfileWriter:
    """Writes a registry to ``directory/trainguard_agent.prom`` atomically."""

    def __init__(self, directory: Path, registry: CollectorRegistry,
                 name: str = TEXTFILE_NAME) -> None:
        if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"metrics textfile_dir {str(directory)!r} is not a writable "
                              "directory; expected node_exporter's --collector.textfile."
                              "directory (e.g. /var/lib/node_exporter/textfile_collector)")
        self.path = directory / name
        self._registry = registry
        self._limiter = LogLimiter(60.0)
        #: Writes that failed (disk full, directory gone); the next heartbeat tries again.
        self.errors = 0

    def write(self) -> bool:
        """Rewrite the file; ``False`` (counted, logged at most once a minute) if it failed."""
        try:
            # A temporary file beside it, then rename(2): node_exporter sees old or new.
            write_to_textfile(str(self.path), self._registry)
        except OSError as exc:
            self.errors += 1
            held = self._limiter.allow()
            if held is not None:
                log.warning("metrics textfile not written path=%s error=%s errors=%d "
                            "not_logged=%d", self.path, exc, self.errors, held)
            return False
        return True


class MetricsOutputs:
    """The agent's configured metrics outputs, fed by :meth:`on_heartbeat`."""

    def __init__(self, metrics: AgentMetrics, textfile: TextfileWriter | None,
                 server: MetricsServer | None) -> None:
        self.metrics, self.textfile, self.server = metrics, textfile, server

    def on_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Show the heartbeat's counters; rewrite the textfile."""
        self.metrics.update(heartbeat)
        if self.textfile is not None:
            self.textfile.write()

    def close(self) -> None:
        """Stop the endpoint (the textfile stays: its age tells the agent is gone)."""
        if self.server is not None:
            self.server.close()


def start_metrics(config: AgentConfig) -> MetricsOutputs | None:
    """The outputs ``config`` asks for (checked now: fail fast), or ``None`` for none."""
    if config.metrics_textfile_dir is None and config.metrics_port is None:
        return None
    metrics = AgentMetrics()
    textfile = server = None
    if config.metrics_textfile_dir is not None:
        only_agent = CollectorRegistry(auto_describe=False)  # no process_*: the node's own
        only_agent.register(metrics)
        textfile = TextfileWriter(config.metrics_textfile_dir, only_agent)
    if config.metrics_port is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics)
        ProcessCollector(registry=registry)
        server = serve_metrics(registry, config.metrics_port, config.metrics_addr)
    return MetricsOutputs(metrics, textfile, server)

