"""The worker's own health, as rows of the ``pipeline_health`` table every few seconds.

What an SRE needs to trust the pipeline: is it reading (ingest rate), keeping up
(consumer lag per partition: messages on the broker not yet read), rejecting input (dead
letters, the store's refusals included), writing (sink batch latency, ``store_down``),
paging (alerts queued for delivery, deliveries given up). Rates are computed from the
counters between two probes, on the wall clock. The same figures, as counters, are what
the worker serves on ``/metrics`` (:mod:`trainguard.pipeline.metrics`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import faust

from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.metrics import WorkerMetrics, WorkerSample
from trainguard.pipeline.publish import PublishCounts
from trainguard.pipeline.sinks.rows import Row
from trainguard.pipeline.sinks.store_sink import SinkCounters, StoreSink

__all__ = ["HealthProbe", "Lag", "add_health"]

#: (topic, partition) → messages not yet read.
Lag = Mapping[tuple[str, int], int]


@dataclass
class _Last:
    at: float
    consumed: int
    records: int


class HealthProbe:
    """Turns cumulative counters into ``pipeline_health`` rows; one per worker."""

    def __init__(self, worker: str, clock: Callable[[], float] = time.time) -> None:
        self.worker = worker
        self._clock = clock
        self._last: _Last | None = None

    def rows(
        self,
        *,
        consumed: int,
        rejected: int,
        sink: SinkCounters,
        lag: Lag,
        extra: Mapping[str, float] | None = None,
    ) -> list[Row]:
        """The rows of one probe; rates need two probes, so the first has none."""
        now = self._clock()
        records = sink.rows + sink.lines
        out: list[Row] = []
        last = self._last
        if last is not None and now > last.at:
            dt = now - last.at
            out.append(self._metric(now, "ingest_msgs_per_s", (consumed - last.consumed) / dt))
            out.append(self._metric(now, "records_per_s", (records - last.records) / dt))
        self._last = _Last(now, consumed, records)
        out.append(self._metric(now, "dead_letters_total", float(rejected)))
        out.append(self._metric(now, "sink_batch_ms", sink.last_batch_s * 1000.0))
        # A probe taken while the store is down waits for it, so this row lands when it is
        # back (the error log says it at once): the gap before it is the outage.
        out.append(self._metric(now, "store_down", float(sink.store_down)))
        out.append(self._metric(now, "store_outages_total", float(sink.outages)))
        for (topic, partition), behind in sorted(lag.items()):
            out.append(self._metric(now, "consumer_lag", float(max(0, behind)), topic, partition))
        for name, value in sorted((extra or {}).items()):
            out.append(self._metric(now, name, float(value)))
        return out

    def _metric(self, ts: float, metric: str, value: float, topic: str = "",
                partition: int = -1) -> Row:
        return {"ts": ts, "worker": self.worker, "metric": metric, "topic": topic,
                "partition": partition, "value": value}


def add_health(
    app: faust.App, every_s: float, probe: HealthProbe, ingestor: Ingestor, sink: StoreSink,
    executor: Executor, extra: Callable[[], dict[str, float]] | None = None, *,
    metrics: WorkerMetrics | None = None, published: PublishCounts | None = None,
    consumers: Callable[[], Iterable[Any]] | None = None,
) -> None:
    """Write a probe to ``pipeline_health`` every ``every_s`` (on the store's thread).

    With ``metrics``, the same figures (and ``published``, the dead letters and findings
    the worker published) also become the next sample ``/metrics`` shows. ``consumers``
    are the Kafka consumers whose lag is reported (default: Faust's own).
    """

    @app.timer(every_s)
    async def write_health() -> None:
        lag: dict[tuple[str, int], int] = {}
        for consumer in (consumers() if consumers is not None else [app.consumer]):
            lag.update(await _lag(consumer))
        # The store's refusals are dead letters too (times out of range, refused rows).
        rejected = sum(ingestor.rejected.values()) + sum(sink.counters.rejected.values())
        figures = extra() if extra else {}
        rows = probe.rows(consumed=ingestor.accepted + rejected, rejected=rejected,
                          sink=sink.counters, lag=lag, extra=figures)
        if metrics is not None:
            metrics.update(WorkerSample.of(
                float(rows[0]["ts"]), accepted=ingestor.accepted, rejected=ingestor.rejected,
                sink=sink.counters, lag=lag, extra=figures, published=published))
        await asyncio.get_running_loop().run_in_executor(
            executor, sink.write, {"pipeline_health": rows})


async def _lag(consumer: Any) -> dict[tuple[str, int], int]:
    """Messages on the broker not yet read, per partition ``consumer`` holds.

    ``consumer``: Faust's or aiokafka's (the raw topics' own); both answer ``assignment``,
    ``highwater`` and ``position``.
    """
    lag: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        try:
            end, read = consumer.highwater(tp), await consumer.position(tp)
        except Exception:  # a partition mid-rebalance: no figure this round
            continue
        if end is not None and read is not None:
            lag[tp.topic, tp.partition] = end - read
    return lag

