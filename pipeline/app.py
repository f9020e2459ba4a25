"""The Faust application: thin glue that feeds Kafka batches to the plain-Python stages.

Topology: input topics → :class:`~trainguard.pipeline.ingest.Ingestor` (decode/validate; rejects
to the dead-letter topic) → :class:`~trainguard.pipeline.baselines.BaselineStage` (anomalies to the
anomalies topic) → :class:`~trainguard.pipeline.consistency.ConsistencyStage` (findings to the
findings topic) → :class:`~trainguard.pipeline.sinks.store_sink.StoreSink`. Many records travel in
one Faust event (a node's GPUs, a job's ranks) and a whole ``take_events`` batch is
handled by a few numpy calls, so Faust's per-event cost is paid per message, not per
sample. A batch's offsets are acknowledged only after its dead letters and anomalies are
acknowledged by Kafka and its rows are in the store: at-least-once end to end. The store
write of one batch overlaps the decoding of the next (at most two in flight), so the
worker's throughput is bounded by the slower of the two, not by their sum.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import mode

from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.health import HealthProbe, add_health
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.pipeline.sinks.rows import Row, rows_for
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.state import chunk_snapshot, partition_key, read_snapshots
from trainguard.pipeline.store import Store
from trainguard.schemas.codec import encode
from trainguard.schemas.records import Finding

__all__ = ["build_app"]

log = logging.getLogger(__name__)

#: Store writes that may run while the next batch is processed. Two overlap the store
#: (its own threads, or a server) with this process's Python work; more would only queue.
_WRITES_IN_FLIGHT = 2


def build_app(
    config: WorkerConfig,
    ingestor: Ingestor,
    sink: StoreSink,
    baselines: BaselineStage | None = None,
    consistency: ConsistencyStage | None = None,
    store: Store | None = None,
) -> faust.App:
    """Create the worker's Faust app with its agents and timers.

    With ``store`` and alerting enabled, the alert stream jobs run in it too
    (:mod:`trainguard.pipeline.alerts.stream`).
    """
    app = faust.App(
        config.app_id,
        broker=config.broker_urls,
        store="memory://",
        datadir=config.data_dir,
        autodiscover=False,
        web_enabled=False,
        topic_partitions=config.partitions,
        topic_replication_factor=config.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=1.0,
        broker_session_timeout=config.session_timeout_s,
        broker_heartbeat_interval=config.session_timeout_s / 4,
        # An agent that crashes takes the worker down (exit 1) so that systemd restarts it
        # and state is restored; Faust's default would leave a live process consuming nothing.
        agent_supervisor=mode.CrashingSupervisor,
        # The agent holds a batch's messages until its store write lands, which may be after
        # the agent stopped: waiting for every message to be acked would hang a shutdown or
        # rebalance. Not waiting is at-least-once: what was not acked is consumed again.
        stream_wait_empty=False,
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    inputs = app.topic(*config.topics.inputs(), **raw)
    dead_letters = app.topic(config.topics.dead_letters, partitions=config.partitions, **raw)
    anomalies = app.topic(config.topics.anomalies, partitions=config.partitions, **raw)
    findings_topic = app.topic(config.topics.findings, partitions=config.partitions, **raw)

    async def publish_findings(found: list[Finding], rows: dict[str, list[Row]]) -> None:
        """Send findings to their topic (keyed by job) and add their table rows."""
        sent = [await findings_topic.send(key=(f.job_id or f.cluster).encode(), value=encode(f))
                for f in found]
        await asyncio.gather(*sent)
        rows["findings"] = rows.get("findings", []) + [r for f in found for _, r in rows_for(f)]
        for f in found:
            if f.cleared_at is not None:
                log.info("finding cleared check=%s job=%s ranks=%s nodes=%s finding_id=%s",
                         f.check, f.job_id, f.ranks, f.nodes, f.finding_id)
                continue
            log.warning("finding check=%s category=%s job=%s ranks=%s nodes=%s summary=%s",
                        f.check, f.category, f.job_id, f.ranks, f.nodes, f.summary)
    state = app.topic(config.topics.baseline_state, partitions=1, **raw)
    next_state = [time.monotonic() + config.state_every_s]
    # The slot each partition's last snapshot went to, and the chunks per (partition, slot).
    state_writes: dict[str, int] = {}
    state_chunks: dict[tuple[str, int], int] = {}
    inputs_set = set(config.topics.inputs())
    # Cleared while a new assignment's state loads: Faust may hand the agent events of the
    # new partitions before the handler finishes, and a cold baseline would judge them.
    state_ready = asyncio.Event()
    state_ready.set()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types the signal kw
    async def move_state(_sender: Any, *args: Any, **_kw: Any) -> None:
        # Faust revokes everything before each rebalance (eager protocol), then hands out the
        # full new assignment: compare with what is held instead of dropping on revoke, so
        # partitions that stay with this worker keep their live state.
        if baselines is None:
            return
        state_ready.clear()
        try:
            await _move_state(args[0] if args else set())
        finally:
            state_ready.set()

    async def _move_state(assigned: set[Any]) -> None:
        assert baselines is not None
        owned = {partition_key(tp.topic, tp.partition) for tp in assigned
                 if tp.topic in inputs_set}
        for key in baselines.partitions() - owned:
            n = baselines.drop(key)
            log.info("baseline state handed off partition=%s entities=%d", key, n)
        missing = owned - baselines.partitions()
        if not missing:
            return
        blobs = await asyncio.get_running_loop().run_in_executor(
            None, read_snapshots, config.bootstrap, config.topics.baseline_state, missing
        )
        for key, blob in blobs.items():
            n = baselines.load(key, blob)
            log.info("baseline state restored partition=%s entities=%d", key, n)

    # One thread owns all store calls: chdb is synchronous and must not block the event loop.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-sink")
    worker_name = f"{socket.gethostname()}:{os.getpid()}"

    # Writes still in flight, oldest first, with the events whose offsets they hold.
    inflight: deque[tuple[asyncio.Future[int], Sequence[faust.types.EventT]]] = deque()

    async def settle_oldest() -> None:
        future, events = inflight.popleft()
        await future  # a StoreError here means the sink gave up: let the agent crash
        for event in events:
            if event.ack():  # the last reference: the offset may now be committed
                app.sensors.on_message_out(event.message.tp, event.message.offset,
                                           event.message)

    @app.agent(inputs, concurrency=1)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, faust.Stream)  # take_events is not on the StreamT protocol
        try:
            await _consume(stream)
        finally:
            # Stopping or crashing: ack what already landed so its offsets can be committed.
            while inflight and _landed(inflight[0][0]):
                await settle_oldest()

    async def _consume(stream: faust.Stream[bytes]) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(config.batch_max, within=config.batch_within_s):
            # Hold every message until its batch is in the store: take_events acks the
            # batch when this body returns, and the write below may still be running then.
            for e in events:
                e.message.incref()
            messages = [
                RawMessage(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                    timestamp=e.message.timestamp,
                )
                for e in events
            ]
            result = ingestor.ingest(messages)
            if result.dead:
                sent = [
                    await dead_letters.send(
                        key=d.source.key, value=d.source.value, headers=d.headers(worker_name)
                    )
                    for d in result.dead
                ]
                await asyncio.gather(*sent)
                result.rows["dead_letters"] = [d.row() for d in result.dead]
                for d in result.dead:
                    log.warning(
                        "dead letter topic=%s partition=%d offset=%d reason=%s error=%s",
                        d.source.topic,
                        d.source.partition,
                        d.source.offset,
                        d.reason,
                        d.message,
                    )
            if baselines is not None:
                await state_ready.wait()
                found = baselines.observe(result.decoded, result.sources)
                if found:
                    sent = [
                        await anomalies.send(key=a.entity.encode(), value=encode(a)) for a in found
                    ]
                    await asyncio.gather(*sent)
                    result.rows["anomalies"] = [row for a in found for _, row in rows_for(a)]
                    for a in found:
                        log.info(
                            "anomaly entity=%s metric=%s pattern=%s value=%.4g baseline=%.4g "
                            "score=%.1f first_seen=%.3f",
                            a.entity, a.metric, a.pattern, a.value, a.baseline, a.score,
                            a.first_seen,
                        )
                if baselines.snapshot_due():
                    result.rows["baselines"] = baselines.snapshot_rows()
            if consistency is not None:
                found_checks = consistency.observe(result.decoded)
                if found_checks:
                    await publish_findings(found_checks, result.rows)
            # Pipelined: the store writes this batch while the next one is decoded and
            # judged. Writes run one at a time, in order, on the store thread.
            inflight.append((
                loop.run_in_executor(executor, sink.write, result.rows, result.lines),
                events,
            ))
            while inflight and (len(inflight) >= _WRITES_IN_FLIGHT or inflight[0][0].done()):
                await settle_oldest()
            if baselines is not None and time.monotonic() >= next_state[0]:
                # After every write landed: a snapshot never holds an alarm whose anomaly is
                # not stored, nor points of a batch that a crash would replay.
                while inflight:
                    await settle_oldest()
                started = time.monotonic()
                generation = time.time_ns()
                sent = []
                for part in sorted(baselines.partitions()):
                    # Alternate slots: the previous snapshot stays whole while this one
                    # is written (see trainguard.pipeline.state).
                    slot = state_writes[part] = (state_writes.get(part, 1) + 1) % 2
                    chunks = chunk_snapshot(part, baselines.export(part), generation, slot,
                                            state_chunks.get((part, slot), 0))
                    state_chunks[part, slot] = sum(1 for _, v in chunks if v is not None)
                    sent += [await state.send(key=k, value=v) for k, v in chunks]
                await asyncio.gather(*sent)
                # A large state (60 MB per partition at 10,000 nodes) takes seconds to
                # export: space snapshots so that they cost at most ~10% of the worker.
                took = time.monotonic() - started
                next_state[0] = time.monotonic() + max(config.state_every_s, 10 * took)
                log.debug("state snapshot partitions=%d chunks=%d took_s=%.2f", len(state_writes),
                          len(sent), took)

    alerting_health: Callable[[], dict[str, float]] | None = None
    if store is not None and config.alerting.enabled:
        from trainguard.pipeline.alerts.stream import add_alerting

        def event_now() -> float:
            return consistency.watermark if consistency is not None else -math.inf

        alerting_health = add_alerting(app, config, sink=sink, store=store, executor=executor,
                                       dead_letters=dead_letters, event_now=event_now)

    add_health(app, config.health_every_s, HealthProbe(worker_name), ingestor, sink, executor,
               alerting_health)

    @app.timer(0.5)
    async def settle_idle() -> None:
        # With no new input the agent body does not run: settle finished writes here so
        # their offsets are committed without waiting for the next message.
        while inflight and inflight[0][0].done():
            await settle_oldest()

    @app.timer(1.0)
    async def close_steps() -> None:
        # Steps whose bounded wait expired (by the jobs' own event time) close here too
        # when no new batch arrives to close them; their findings go out like the others.
        if consistency is None:
            return
        found = consistency.flush()
        if found:
            rows: dict[str, list[Row]] = {}
            await publish_findings(found, rows)
            await asyncio.get_running_loop().run_in_executor(executor, sink.write, rows)

    @app.timer(10.0)
    async def report() -> None:
        c = sink.counters
        log.info(
            "worker progress records=%d rejected=%d rows=%d lines=%d batches=%d retries=%d "
            "last_batch_ms=%.1f",
            ingestor.accepted,
            sum(ingestor.rejected.values()),
            c.rows,
            c.lines,
            c.batches,
            c.retries,
            c.last_batch_s * 1000,
        )

    return app


def _landed(future: asyncio.Future[int]) -> bool:
    """True when a store write finished without error."""
    return future.done() and not future.cancelled() and future.exception() is None
