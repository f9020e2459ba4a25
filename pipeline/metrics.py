"""The worker's Prometheus metrics on ``/metrics``: the figures of its health probe.

Nothing is counted twice. The health timer (:func:`~trainguard.pipeline.health.add_health`)
already gathers every figure of a ``pipeline_health`` row on the event loop; it hands the
same figures to :meth:`WorkerMetrics.update` as one :class:`WorkerSample`, and a scrape
(on the HTTP server's thread) renders the latest sample. A scrape therefore never touches
live stage state from another thread, and shows the worker as of its last probe
(``health_every_s``); ``trainguard_worker_last_probe_timestamp_seconds`` says when that was,
so a worker whose loop is stuck is seen even though its HTTP thread still answers.

Names follow Prometheus' conventions: ``_total`` counters, base units (seconds), the
worker's identity in ``trainguard_worker_info`` rather than on every series.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from trainguard.pipeline.publish import PublishCounts
from trainguard.pipeline.sinks.store_sink import SinkCounters

__all__ = ["WorkerMetrics", "WorkerSample"]

#: Health figures (``_with_caps`` and the alert jobs) with their own metric: key → name, doc.
_GAUGES = {
    "alerts_queued": ("trainguard_alerts_queued", "Alerts waiting for a receiver."),
    "alerts_firing": ("trainguard_alerts_firing", "Alerts firing now."),
}
_COUNTERS = {
    "deliveries_failed_total": ("trainguard_alert_deliveries_failed",
                                "Alert deliveries given up (the receiver never got them)."),
    "baseline_quiet_taken": ("trainguard_baseline_quiet_points_taken",
                             "Points the baselines' compiled quiet path took in."),
    "baseline_quiet_passed": ("trainguard_baseline_quiet_points_passed",
                              "Points the compiled quiet path passed to the vectorized one."),
    "state_snapshot_rounds": ("trainguard_state_snapshot_rounds",
                              "State snapshot rounds sent whole (what a failover restores)."),
    "state_snapshot_rounds_failed": ("trainguard_state_snapshot_rounds_failed",
                                     "State snapshot rounds that failed (previous ones stay)."),
    "state_snapshot_rounds_abandoned": (
        "trainguard_state_snapshot_rounds_abandoned",
        "State snapshot rounds dropped because a store write they followed failed."),
}
#: Health figures whose key ends in a label value: prefix → (name, label, prefix of the
#: label value, doc).
_LABELLED = {
    "alert_stage_errors_": ("trainguard_stage_errors", "stage", "alert_",
                            "Records a stage failed on (quarantined), by stage."),
    "stage_errors_": ("trainguard_stage_errors", "stage", "",
                      "Records a stage failed on (quarantined), by stage."),
    "auth_verified_kid_": ("trainguard_auth_verified", "kid", "",
                           "Input messages whose MAC verified, by fleet key id."),
    "auth_failed_": ("trainguard_auth_failed", "reason", "",
                     "Input messages whose MAC did not verify, by reason."),
}
#: Covered by the labelled families above (their sum).
_SKIP = frozenset({"auth_verified"})
_NAME = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class WorkerSample:
    """One health probe's figures, copied on the event loop (later work does not change them)."""

    at: float
    accepted: int
    #: Records refused by the ingest stage (decode, validation, caps, clock, MACs), by reason.
    rejected: Mapping[str, int]
    sink: SinkCounters
    #: (topic, partition) → messages on the broker not yet read.
    lag: Mapping[tuple[str, int], int]
    #: The probe's other figures (stage errors, caps, alerting), as in ``pipeline_health``.
    extra: Mapping[str, float] = field(default_factory=dict)
    published: PublishCounts = field(default_factory=PublishCounts)

    @classmethod
    def of(cls, at: float, *, accepted: int, rejected: Mapping[str, int], sink: SinkCounters,
           lag: Mapping[tuple[str, int], int], extra: Mapping[str, float] | None = None,
           published: PublishCounts | None = None) -> WorkerSample:
        """A sample of the live counters, copied: the stages (and the store thread) go on."""
        return cls(at, accepted, dict(rejected),
                   replace(sink, rejected=dict(sink.rejected),
                           batch_seconds=sink.batch_seconds.copy()),
                   dict(lag), dict(extra or {}),
                   published.copy() if published is not None else PublishCounts())


class WorkerMetrics(Collector):
    """A prometheus_client collector rendering the latest :class:`WorkerSample`."""

    def __init__(self, worker: str, *, process: bool = True) -> None:
        self.worker = worker
        self._sample: WorkerSample | None = None  # replaced whole: no lock needed
        #: This collector, and the process's CPU, memory and start time (Linux ``/proc``).
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        if process:
            ProcessCollector(registry=self.registry)

    def update(self, sample: WorkerSample) -> None:
        """Publish a new probe; the next scrape shows it."""
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        """The metric families of the latest sample (only the info metric before one)."""
        info = GaugeMetricFamily("trainguard_worker_info", "This worker's identity.",
                                 labels=["worker"])
        info.add_metric([self.worker], 1.0)
        yield info
        s = self._sample
        if s is None:
            return
        yield GaugeMetricFamily("trainguard_worker_last_probe_timestamp_seconds",
                                "When the worker last probed its health (Unix time).",
                                value=s.at)
        yield from _ingest(s)
        yield from _store(s.sink)
        lag = GaugeMetricFamily("trainguard_consumer_lag",
                                "Messages on the broker not yet read, per partition this "
                                "worker consumes.", labels=["topic", "partition"])
        for (topic, partition), behind in sorted(s.lag.items()):
            lag.add_metric([topic, str(partition)], float(max(0, behind)))
        yield lag
        yield from _published(s.published)
        yield from _extra(s.extra)


def _ingest(s: WorkerSample) -> Iterator[Metric]:
    yield CounterMetricFamily("trainguard_records_accepted",
                              "Records the ingest stage accepted.", value=s.accepted)
    rejected = CounterMetricFamily(
        "trainguard_records_rejected", "Records refused (dead letters) by the ingest stage "
        "or the store, by stage and reason.", labels=["stage", "reason"])
    for reason, n in sorted(s.rejected.items()):
        rejected.add_metric(["ingest", reason], n)
    for reason, n in sorted(s.sink.rejected.items()):
        rejected.add_metric(["store", reason], n)
    yield rejected


def _store(c: SinkCounters) -> Iterator[Metric]:
    for name, value, doc in (
        ("batches", c.batches, "Store writes (one per batch)."),
        ("rows", c.rows, "Rows written to the store."),
        ("lines", c.lines, "Intake records (sample and step batches) stored as columns."),
        ("retries", c.retries, "Store writes retried."),
        ("outages", c.outages, "Times the store was declared down."),
    ):
        yield CounterMetricFamily(f"trainguard_store_{name}", doc, value=value)
    yield GaugeMetricFamily("trainguard_store_down",
                            "1 while the store has failed for longer than its retry time.",
                            value=float(c.store_down))
    h = c.batch_seconds
    yield HistogramMetricFamily(
        "trainguard_store_batch_seconds", "Duration of one batch's store write, retries "
        "included.", buckets=[(_le(b), n) for b, n in h.cumulative()], sum_value=h.sum_s)


def _published(p: PublishCounts) -> Iterator[Metric]:
    for name, counts, label, doc in (
        ("trainguard_dead_letters", p.dead_letters, "reason",
         "Dead letters published (every stage, store and delivery), by reason."),
        ("trainguard_findings", p.findings, "check", "Findings raised, by check."),
        ("trainguard_findings_cleared", p.findings_cleared, "check",
         "Findings cleared, by check."),
    ):
        family = CounterMetricFamily(name, doc, labels=[label])
        for value, n in sorted(counts.items()):
            family.add_metric([value], n)
        yield family
    yield CounterMetricFamily("trainguard_anomalies", "Anomalies the baselines published.",
                              value=p.anomalies)


def _extra(extra: Mapping[str, float]) -> Iterator[Metric]:
    """The probe's other figures: known ones by name, families by prefix, the rest as gauges."""
    labelled: dict[str, CounterMetricFamily] = {}
    rest: list[tuple[str, float]] = []
    for key, value in sorted(extra.items()):
        if key in _GAUGES:
            name, doc = _GAUGES[key]
            yield GaugeMetricFamily(name, doc, value=value)
        elif key in _COUNTERS:
            name, doc = _COUNTERS[key]
            yield CounterMetricFamily(name, doc, value=value)
        elif key not in _SKIP:
            prefix = next((p for p in _LABELLED if key.startswith(p)), None)
            if prefix is None:
                rest.append((key, value))
                continue
            name, label, tag, doc = _LABELLED[prefix]
            family = labelled.setdefault(name, CounterMetricFamily(name, doc, labels=[label]))
            family.add_metric([tag + key[len(prefix):]], value)
    yield from labelled.values()
    for key, value in rest:
        yield GaugeMetricFamily(f"trainguard_{_NAME.sub('_', key)}",
                                f"The worker's {key} figure (as in pipeline_health).",
                                value=value)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
