"""The alert stream jobs (Faust glue): findings → alerts → receivers.

* ``alert_on_findings`` consumes the findings topic (keyed by job), feeds one
  :class:`~trainguard.pipeline.alerts.lifecycle.AlertLifecycle` per partition and publishes each
  alert state change to the alerts topic and the ``alerts`` table before the findings'
  offsets are acknowledged. A timer advances the lifecycles (resolves), another re-reads
  the silences from the store. When partitions move, the new owner restores the alerts
  its predecessor left firing (from the store), so nobody is paged twice.
* ``deliver_alerts`` (only with receivers configured) consumes the alerts topic and hands
  each state change to the :class:`~trainguard.pipeline.alerts.delivery.Dispatcher`; an alert's
  offset is acknowledged once every receiver took it or gave up (then it is a dead
  letter). The delivery ledger goes to the ``alert_deliveries`` table, and is read back
  at start, so a replay sends nothing twice.

Lifecycle "now" is event time: the later of the wall clock and the newest record time
the worker saw, so a replayed or accelerated stream resolves on its own clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import faust
from kafka.partitioner.default import murmur2

from trainguard.pipeline.alerts.config import Silence
from trainguard.pipeline.alerts.delivery import Dispatcher, MemoryLedger
from trainguard.pipeline.alerts.history import delivered_keys, open_alerts
from trainguard.pipeline.alerts.lifecycle import AlertLifecycle
from trainguard.pipeline.alerts.silences import active_silences
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.sinks.rows import Row, rows_for
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store import Store
from trainguard.schemas.codec import RecordDecoder, RecordError, encode
from trainguard.schemas.records import Alert, Finding

__all__ = ["add_alerting", "key_partition"]

log = logging.getLogger(__name__)

#: Open alerts and deliveries this far back are read from the store at start.
_LOOKBACK_S = 7 * 24 * 3600.0
#: A partial batch of findings or alerts waits at most this long: pages are urgent.
_WITHIN_S = 0.02


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as the producer)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def add_alerting(
    app: faust.App,
    config: WorkerConfig,
    *,
    sink: StoreSink,
    store: Store,
    executor: Executor,
    dead_letters: faust.types.TopicT,
    event_now: Callable[[], float],
) -> Callable[[], dict[str, float]]:
    """Register the alert agents and timers on ``app`` (see the module docstring).

    Returns a probe of the alerting's health for ``pipeline_health``.
    """
    cfg = config.alerting
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    findings_in = app.topic(config.topics.findings, **raw)
    alerts_topic = app.topic(config.topics.alerts, partitions=config.partitions, **raw)
    lifecycles: dict[int, AlertLifecycle] = {}
    silences: list[Silence] = []
    ready = asyncio.Event()
    ready.set()
    findings_decoder: RecordDecoder[Finding] = RecordDecoder(Finding)
    alerts_decoder: RecordDecoder[Alert] = RecordDecoder(Alert)
    loop_call = _StoreCalls(executor)

    def now() -> float:
        return max(time.time(), event_now())

    async def reject(message: Any, error: RecordError) -> None:
        """An undecodable finding or alert: a dead letter with the reason, never a crash."""
        row = {"topic": message.topic, "partition": message.partition,
               "offset": message.offset, "reason": error.reason, "message": error.message[:2048],
               "payload_head": (message.value or b"")[:512].decode("utf-8", "backslashreplace"),
               "payload_size": len(message.value or b""), "ts": time.time()}
        await (await dead_letters.send(key=message.key, value=message.value, headers=[
            ("tg.error.reason", error.reason.encode()),
            ("tg.error.message", error.message.encode()[:2048]),
            ("tg.source.topic", message.topic.encode())]))
        await loop_call(sink.write, {"dead_letters": [row]})
        log.warning("dead letter topic=%s partition=%d offset=%d reason=%s error=%s",
                    message.topic, message.partition, message.offset, error.reason,
                    error.message)

    async def publish(changes: Sequence[Alert]) -> None:
        """Alert state changes to the topic (delivery starts) and then to the table."""
        if not changes:
            return
        sent = [await alerts_topic.send(key=(a.job_id or a.cluster).encode(), value=encode(a))
                for a in changes]
        await asyncio.gather(*sent)
        rows: dict[str, list[Row]] = {"alerts": [r for a in changes for _, r in rows_for(a)]}
        await loop_call(sink.write, rows)
        for a in changes:
            log.warning("alert %s severity=%s check=%s job=%s node=%s rank=%s alert_id=%s "
                        "summary=%s", a.status, a.severity, a.check, a.job_id, a.node, a.rank,
                        a.alert_id, a.summary)

    def lifecycle(partition: int) -> AlertLifecycle:
        lc = lifecycles.get(partition)
        if lc is None:
            lc = lifecycles[partition] = AlertLifecycle(cfg.lifecycle)
            lc.set_silences(silences)
        return lc

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types the signal kw
    async def move_alerts(_sender: Any, *args: Any, **_kw: Any) -> None:
        ready.clear()
        try:
            owned = {tp.partition for tp in (args[0] if args else set())
                     if tp.topic == config.topics.findings}
            for part in set(lifecycles) - owned:
                del lifecycles[part]
            new = owned - set(lifecycles)
            if not new:
                return
            since = time.time() - _LOOKBACK_S
            found = await loop_call(open_alerts, store, since)
            for part in sorted(new):
                mine = [a for a in found if key_partition(
                    (a.job_id or a.cluster).encode(), config.partitions) == part]
                n = lifecycle(part).restore(mine)
                if n:
                    log.info("alerts restored partition=%d firing=%d", part, n)
        finally:
            ready.set()

    @app.agent(findings_in, concurrency=1)
    async def alert_on_findings(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, faust.Stream)
        async for events in stream.take_events(500, within=_WITHIN_S):
            await ready.wait()
            by_part: dict[int, list[Finding]] = {}
            for e in events:
                try:
                    finding = findings_decoder.decode(e.message.value)
                except RecordError as exc:
                    await reject(e.message, exc)
                    continue
                by_part.setdefault(e.message.partition, []).append(finding)
            changes: list[Alert] = []
            for part, found in by_part.items():
                changes += lifecycle(part).observe_findings(found)
            await publish(changes)

    @app.timer(1.0)
    async def advance_alerts() -> None:
        t = now()
        changes = [a for lc in list(lifecycles.values()) for a in lc.tick(t)]
        await publish(changes)

    @app.timer(cfg.silences_every_s)
    async def refresh_silences() -> None:
        try:
            active = await loop_call(active_silences, store, time.time())
        except Exception as exc:  # a store hiccup must not stop paging; the old set stays
            log.warning("silences not refreshed error=%s", exc)
            return
        silences[:] = active
        for lc in lifecycles.values():
            lc.set_silences(active)

    dispatcher = None
    if cfg.receivers:
        dispatcher = _add_delivery(app, config, alerts_topic, alerts_decoder, reject, sink,
                                   store, loop_call, dead_letters)

    def health() -> dict[str, float]:
        out = {"alerts_firing": float(sum(len(lc.open_alerts()) for lc in lifecycles.values()))}
        if dispatcher is not None:
            stats = dispatcher.stats().values()
            out["alerts_queued"] = float(sum(c["queued"] for c in stats))
            out["deliveries_failed_total"] = float(sum(c["failed"] for c in stats))
        return out

    return health


def _add_delivery(
    app: faust.App, config: WorkerConfig, alerts_topic: faust.types.TopicT,
    decoder: RecordDecoder[Alert], reject: Callable[[Any, RecordError], Any], sink: StoreSink,
    store: Store, loop_call: _StoreCalls, dead_letters: faust.types.TopicT,
) -> Dispatcher:
    """The delivery agent, its ledger and the flushing of ledger rows to the store."""
    ledger = MemoryLedger()
    failed_rows: list[Row] = []

    def on_failed(alert: Alert, receiver: str, reason: str) -> None:
        # The alert stays in the alerts table; this row says which receiver never got it.
        failed_rows.append({
            "topic": config.topics.alerts, "partition": -1, "offset": -1,
            "reason": "delivery_failed", "message": f"receiver={receiver}: {reason}"[:2048],
            "payload_head": encode(alert)[:512].decode("utf-8", "backslashreplace"),
            "payload_size": len(encode(alert)), "ts": time.time()})
        log.error("alert delivery failed receiver=%s alert_id=%s status=%s reason=%s",
                  receiver, alert.alert_id, alert.status, reason)

    dispatcher = Dispatcher(config.alerting.receivers, ledger, on_failed=on_failed)
    started = asyncio.Event()

    @app.task
    async def start_delivery() -> None:
        since = time.time() - _LOOKBACK_S
        keys = await loop_call(delivered_keys, store, since)
        ledger.preload(keys)
        await dispatcher.start()
        # Alertmanager forgets alerts nobody re-sends: keep those still firing alive.
        dispatcher.keep_alive(await loop_call(open_alerts, store, since))
        log.info("alert delivery started receivers=%s delivered_known=%d",
                 ",".join(r.name for r in config.alerting.receivers), len(keys))
        started.set()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_delivery(_sender: Any, *args: Any, **_kw: Any) -> None:
        await dispatcher.stop(drain_s=5.0)

    @app.agent(alerts_topic, concurrency=1)
    async def deliver_alerts(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, faust.Stream)
        await started.wait()
        async for events in stream.take_events(256, within=_WITHIN_S):
            alerts: list[Alert] = []
            held: list[faust.types.EventT] = []
            for e in events:
                try:
                    alerts.append(decoder.decode(e.message.value))
                except RecordError as exc:
                    await reject(e.message, exc)
                    continue
                e.message.incref()  # held until every receiver took it or gave up
                held.append(e)
            if not alerts:
                continue
            done = await dispatcher.submit(alerts)
            done.add_done_callback(functools.partial(_ack, app, held))

    @app.timer(1.0)
    async def flush_ledger() -> None:
        rows: dict[str, list[Row]] = {"alert_deliveries": ledger.take_rows()}
        if failed_rows:
            rows["dead_letters"] = failed_rows[:]
            failed_rows.clear()
        if any(rows.values()):
            await loop_call(sink.write, rows)

    @app.timer(30.0)
    async def report_delivery() -> None:
        for name, c in dispatcher.stats().items():
            log.info("delivery receiver=%s sent=%d retries=%d failed=%d queued=%d resent=%d "
                     "skipped=%d", name, c["sent"], c["retries"], c["failed"], c["queued"],
                     c["resent"], c["skipped"])

    return dispatcher


def _ack(app: faust.App, events: Sequence[faust.types.EventT], done: asyncio.Future[None]) -> None:
    """Release the held messages once delivered; a cancelled delivery is replayed instead."""
    if done.cancelled():
        return
    for event in events:
        if event.ack():
            app.sensors.on_message_out(event.message.tp, event.message.offset, event.message)


class _StoreCalls:
    """Runs store calls on the store's own thread (chdb is synchronous, one owner)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
