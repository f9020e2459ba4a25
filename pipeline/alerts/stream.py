"""The alert stream jobs (Faust glue): findings → alerts → receivers.

* ``alert_on_findings`` consumes the findings topic (keyed by job) and feeds it to an
  :class:`~trainguard.pipeline.alerts.alert_job.AlertJob`: one
  :class:`~trainguard.pipeline.alerts.lifecycle.AlertLifecycle` per partition, each alert
  state change published to the alerts topic and the ``alerts`` table before the
  findings' offsets are acknowledged. ``alert_on_anomalies`` does the same for the
  baseline anomalies (keyed by entity): tickets, never pages (``anomaly_patterns``;
  none: no such agent). A timer advances the lifecycles (resolves), another re-reads the
  silences and the change approvals from the store. When partitions move, the new owner
  restores the alerts its predecessor left firing (from the store), so nobody is paged
  twice.
* ``deliver_alerts`` (only with receivers configured) consumes the alerts topic and feeds
  a :class:`~trainguard.pipeline.alerts.delivery_job.DeliveryJob`; an alert's offset is
  acknowledged once every receiver took it or gave up (then it is a dead letter). The
  delivery ledger goes to the ``alert_deliveries`` table, and is read back at start, so a
  replay sends nothing twice.

Lifecycle "now" is per job: the later of the wall clock and that job's newest record
time (see :class:`~trainguard.pipeline.alerts.alert_job.AlertJob`), so a replayed or
accelerated stream resolves on its own clock and no job's records resolve another's. This
module only wires the jobs to Faust agents, timers and signals.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import faust

from trainguard.pipeline.alerts.alert_job import AlertJob, key_partition
from trainguard.pipeline.alerts.approvals import active_approvals
from trainguard.pipeline.alerts.delivery_job import DeliveryJob
from trainguard.pipeline.alerts.history import delivered_keys, open_alerts
from trainguard.pipeline.alerts.silences import active_silences
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.offsets import HeldOffsets, message_out
from trainguard.pipeline.publish import Publisher
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store import Store

__all__ = ["add_alerting", "key_partition"]

#: A partial batch of findings or alerts waits at most this long: pages are urgent.
_WITHIN_S = 0.02
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                        "key_serializer": "raw", "value_serializer": "raw"}


def add_alerting(
    app: faust.App,
    config: WorkerConfig,
    *,
    sink: StoreSink,
    store: Store,
    executor: Executor,
    publisher: Publisher,
    event_now: Callable[[str], float],
) -> Callable[[], dict[str, float]]:
    """Register the alert agents and timers on ``app`` (see the module docstring).

    ``publisher`` sends dead letters; alert state changes go to a topic added here.
    Returns a probe of the alerting's health for ``pipeline_health``.
    """
    cfg = config.alerting
    alerts_topic = app.topic(config.topics.alerts, partitions=config.partitions, **_RAW)
    publisher = publisher.with_alerts(alerts_topic)
    call = _StoreCalls(executor)
    write = functools.partial(call, sink.write)
    job = AlertJob(cfg.lifecycle, publisher, write, findings_topic=config.topics.findings,
                   partitions=config.partitions,
                   read_open=functools.partial(call, open_alerts, store),
                   read_silences=functools.partial(call, active_silences, store),
                   event_now=event_now, anomalies_topic=_anomaly_topic(config),
                   read_approvals=functools.partial(call, active_approvals, store))

    _add_alerts(app, config, job)
    delivery = None
    if cfg.receivers:
        delivery = DeliveryJob(cfg.receivers, publisher, write, HeldOffsets(message_out(app)),
                               alerts_topic=config.topics.alerts,
                               read_delivered=functools.partial(call, delivered_keys, store),
                               read_open=functools.partial(call, open_alerts, store))
        _add_delivery(app, alerts_topic, delivery)

    def health() -> dict[str, float]:
        out = {"alerts_firing": float(job.firing()),
               "alert_silences_refused": float(job.silences_refused)}
        out.update({f"alert_{k}": v for k, v in job.quarantine.health().items()
                    if k.startswith("stage_errors_")})
        if delivery is not None:
            out.update(delivery.health())
        return out

    return health


def _add_alerts(app: faust.App, config: WorkerConfig, job: AlertJob) -> None:
    """The findings agent, its restore on assignment, and the tick and silences timers."""

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types the signal kw
    async def move_alerts(_sender: Any, *args: Any, **_kw: Any) -> None:
        await job.on_assigned(args[0] if args else set())

    @app.agent(app.topic(config.topics.findings, **_RAW), concurrency=1)
    async def alert_on_findings(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, faust.Stream)
        async for events in stream.take_events(500, within=_WITHIN_S):
            await job.handle(events)

    if _anomaly_topic(config) is not None:
        @app.agent(app.topic(config.topics.anomalies, **_RAW), concurrency=1)
        async def alert_on_anomalies(stream: faust.StreamT[bytes]) -> None:
            assert isinstance(stream, faust.Stream)
            async for events in stream.take_events(500, within=_WITHIN_S):
                await job.handle_anomalies(events)

    @app.timer(1.0)
    async def advance_alerts() -> None:
        await job.tick()

    @app.timer(config.alerting.silences_every_s)
    async def refresh_silences() -> None:
        await job.refresh_silences()
        await job.refresh_approvals()


def _anomaly_topic(config: WorkerConfig) -> str | None:
    """The anomalies topic when some anomaly patterns become tickets, else None."""
    return config.topics.anomalies if config.alerting.lifecycle.anomaly_patterns else None


def _add_delivery(app: faust.App, alerts_topic: faust.types.TopicT, job: DeliveryJob) -> None:
    """The delivery agent, its start and stop, and the flushing of ledger rows."""

    @app.task
    async def start_delivery() -> None:
        await job.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_delivery(_sender: Any, *args: Any, **_kw: Any) -> None:
        await job.stop(drain_s=5.0)

    @app.agent(alerts_topic, concurrency=1)
    async def deliver_alerts(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, faust.Stream)
        await job.wait_started()
        async for events in stream.take_events(256, within=_WITHIN_S):
            await job.handle(events)

    @app.timer(1.0)
    async def flush_ledger() -> None:
        await job.flush()

    @app.timer(30.0)
    async def report_delivery() -> None:
        job.report()


class _StoreCalls:
    """Runs store calls on the store's own thread (chdb is synchronous, one owner)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

