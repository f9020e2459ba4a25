"""The Faust application: thin glue that feeds Kafka batches to the plain-Python stages.

Topology: input topics → :class:`~trainguard.pipeline.raw_consumer.RawConsumer` (``getmany``
batches, off Faust's per-event path) → :class:`~trainguard.pipeline.ingest.Ingestor`
(decode/validate; rejects to the dead-letter topic) →
:class:`~trainguard.pipeline.baselines.BaselineStage` (anomalies to the anomalies topic) →
:class:`~trainguard.pipeline.consistency.ConsistencyStage` (findings to the findings topic)
→ :class:`~trainguard.pipeline.sinks.store_sink.StoreSink`. Faust runs the rest: the alert
stream jobs downstream of the findings, the timers, health and metrics. A batch's
offsets are committed only after its dead letters and anomalies are acknowledged by
Kafka and its rows are in the store: at-least-once end to end. The store write of one
batch overlaps the decoding of the next (at most two in flight), so the worker's
throughput is bounded by the slower of the two, not by their sum.

The parts, each tested alone: :class:`~trainguard.pipeline.batches.BatchHandler` (one batch
through the stages), :class:`~trainguard.pipeline.offsets.HeldOffsets` (hold-and-ack),
:class:`~trainguard.pipeline.raw_consumer.RawConsumer` (batches and commits),
:class:`~trainguard.pipeline.publish.Publisher` (topics and rows) and
:class:`~trainguard.pipeline.snapshots.StateSnapshots` (detector state). This module only
creates the app and its topics and wires the parts to tasks, timers and signals.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import faust
import mode
from faust.types.auth import CredentialsT

from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.batches import BatchHandler, StoreWrite
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.health import HealthProbe, add_health
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.metrics import WorkerMetrics
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.publish import Publisher
from trainguard.pipeline.raw_consumer import CommitLedger, RawConsumer, raw_group
from trainguard.pipeline.sinks.intake import IntakeItem
from trainguard.pipeline.sinks.rows import Row
from trainguard.pipeline.sinks.sources import SourceOf
from trainguard.pipeline.sinks.store_sink import StoreSink, WriteResult
from trainguard.pipeline.snapshots import StageStates, StateSnapshots
from trainguard.pipeline.state import read_snapshots
from trainguard.pipeline.store import Store
from trainguard.pipeline.store.merge_priority import MergePriority
from trainguard.schemas.kafka_security import KafkaSecurity
from trainguard.sd_notify import SdNotifier

__all__ = ["build_app", "faust_credentials"]

log = logging.getLogger(__name__)

#: Raw bytes in and out: the stages decode and encode themselves.
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                        "key_serializer": "raw", "value_serializer": "raw"}


def build_app(
    config: WorkerConfig,
    ingestor: Ingestor,
    sink: StoreSink,
    baselines: BaselineStage | None = None,
    consistency: ConsistencyStage | None = None,
    store: Store | None = None,
    metrics: WorkerMetrics | None = None,
    notifier: SdNotifier | None = None,
) -> faust.App:
    """Create the worker's Faust app with its agents and timers.

    With ``store`` and alerting enabled, the alert stream jobs run in it too
    (:mod:`trainguard.pipeline.alerts.stream`). With ``metrics``, each health probe is
    also the sample ``/metrics`` serves. With an enabled ``notifier`` (a ``Type=notify``
    unit), systemd hears ``READY=1`` once the app runs and watchdog pings from its loop.
    """
    app = _new_app(config)
    dead_letters = app.topic(config.topics.dead_letters, partitions=config.partitions, **_RAW)
    publisher = Publisher(
        f"{socket.gethostname()}:{os.getpid()}", dead_letters=dead_letters,
        anomalies=app.topic(config.topics.anomalies, partitions=config.partitions, **_RAW),
        findings=app.topic(config.topics.findings, partitions=config.partitions, **_RAW),
    )
    snapshots = None
    if baselines is not None:
        snapshots = StateSnapshots(
            StageStates(baselines=baselines, consistency=consistency),
            app.topic(config.topics.baseline_state, partitions=1, **_RAW),
            inputs=config.topics.inputs(), every_s=config.state_every_s,
            max_share=config.state_max_share,
            read=functools.partial(read_snapshots, config.bootstrap,
                                   config.topics.baseline_state, security=config.security))
    # One thread owns all store calls: chdb is synchronous and must not block the event loop.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-sink")
    ledger = CommitLedger()
    handler = BatchHandler(ingestor, publisher, HeldOffsets(ledger.released),
                           _store_write(executor, sink), baselines=baselines,
                           consistency=consistency, snapshots=snapshots)
    raw_consumers: list[Any] = []  # the raw topics' consumer, once its task made it
    _add_ingest(app, config, handler, ledger,
                snapshots.on_assigned if snapshots is not None else None, raw_consumers)

    alerting_health: Callable[[], dict[str, float]] | None = None
    if store is not None and config.alerting.enabled:
        from trainguard.pipeline.alerts.stream import add_alerting

        def event_now(job: str) -> float:
            return consistency.job_watermark(job) if consistency is not None else -math.inf

        alerting_health = add_alerting(app, config, sink=sink, store=store, executor=executor,
                                       publisher=publisher, event_now=event_now)

    # chdb merges on this process's threads: they yield to the loop (see merge_priority).
    merges = MergePriority(config.store_merge_nice) if config.store.embedded else None
    if merges is not None:
        merges.apply()  # the store is open: its merge threads exist, before the first batch

    def health() -> dict[str, float]:
        out = handler.quarantine.health()
        if merges is not None:  # merge threads come and go: each probe lowers new ones
            out["store_merge_threads"] = float(merges.apply())
        # Raw offsets commits the broker refused (a rebalance first): those batches are read
        # again and deduplicated by the store; a steady count means something is wrong.
        out["raw_commits_failed"] = float(ledger.failed)
        if snapshots is not None:  # a failover restores the last round sent whole
            out.update(snapshots.health())
        if ingestor.auth is not None:  # MACs verified and refused, forgeries folded
            out.update(ingestor.auth.health())
        if alerting_health is not None:
            out.update(alerting_health())
        return out

    add_health(app, config.health_every_s, HealthProbe(publisher.worker), ingestor, sink,
               executor, _with_caps(health, baselines, consistency), metrics=metrics,
               published=publisher.counts, consumers=lambda: [app.consumer, *raw_consumers])
    _add_report(app, ingestor, sink, handler)
    if notifier is not None and notifier.enabled:
        add_sd_watchdog(app, notifier)
    return app


def add_sd_watchdog(app: faust.App, notifier: SdNotifier) -> None:
    """``READY=1`` on the first tick of a timer, then ``WATCHDOG=1`` every half period.

    A timer runs only while the app's event loop turns: a loop blocked by a call that
    never returns (a hung client, a deadlock) stops the pings, and systemd restarts the
    worker after ``WatchdogSec``. A store that is down is not such a case: the sink
    retries in its own thread and the loop goes on.
    """
    ready = False

    @app.timer(1.0)
    async def sd_watchdog() -> None:
        nonlocal ready
        if not ready:
            ready = notifier.ready("consuming")
        notifier.watchdog()


def _with_caps(
    extra: Callable[[], dict[str, float]] | None, baselines: BaselineStage | None,
    consistency: ConsistencyStage | None,
) -> Callable[[], dict[str, float]]:
    """Health metrics of ``extra`` plus the stages' cap and evidence counters."""

    def metrics() -> dict[str, float]:
        out = dict(extra()) if extra is not None else {}
        if baselines is not None:
            out["baseline_entities_evicted"] = float(baselines.evicted)
            # Departures kept out of the anomalies (small, tail, episode, shared by peers).
            for reason, n in baselines.suppressed().items():
                out[f"baseline_suppressed_{reason}"] = float(n)
            # How much of the load the compiled path carries (falls when rows are noisy).
            taken, passed = baselines.quiet_points()
            out["baseline_quiet_taken"] = float(taken)
            out["baseline_quiet_passed"] = float(passed)
        if consistency is not None:
            out["consistency_jobs_evicted"] = float(consistency.evicted_jobs)
            stats = consistency.stats()
            out["consistency_records_malformed"] = float(stats["malformed_records"])
            # Evidence the checks kept out (the first report stays; see conflicting_report).
            for name in ("conflicting_records", "conflicting_saves", "refused_saves",
                         "unwitnessed_saves", "witness_refused", "rank_claims",
                         "rank_events_dropped", "state_rejected", "state_jobs_left_out",
                         "agent_restarts", "nodes_evicted"):
                out[f"consistency_{name}"] = float(stats[name])
        return out

    return metrics


def _new_app(config: WorkerConfig) -> faust.App:
    return faust.App(
        config.app_id,
        broker=config.broker_urls,
        broker_credentials=faust_credentials(config.security),
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


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """Faust's credentials for ``security`` (aiokafka underneath); ``None`` when plain."""
    context = security.ssl_context()
    if security.sasl:
        return faust.SASLCredentials(username=security.username, password=security.password,
                                     ssl_context=context, mechanism=security.mechanism)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def _store_write(executor: Executor, sink: StoreSink) -> StoreWrite:
    """Start ``sink.write`` on the store thread; the future completes when it landed."""

    def write(rows: Mapping[str, Sequence[Row]], lines: Mapping[str, Sequence[IntakeItem]] | None,
              sources: SourceOf | None) -> asyncio.Future[WriteResult]:
        return asyncio.get_running_loop().run_in_executor(executor, sink.write, rows, lines,
                                                          sources)

    return write


def _raw_kafka_consumer(config: WorkerConfig) -> Any:
    """The aiokafka consumer of the raw topics: manual commits, co-partitioned assignment."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    return AIOKafkaConsumer(
        bootstrap_servers=[b.strip() for b in config.bootstrap.split(",") if b.strip()],
        group_id=raw_group(config.app_id),
        client_id=f"{config.app_id}-raw-{socket.gethostname()}-{os.getpid()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Range, not aiokafka's round robin: partition i of every raw topic to one worker.
        partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=int(config.session_timeout_s * 1000),
        heartbeat_interval_ms=int(config.session_timeout_s * 1000 / 4),
        max_partition_fetch_bytes=config.max_partition_fetch_bytes,
        **config.security.aiokafka_kwargs(),
    )


def _add_ingest(app: faust.App, config: WorkerConfig, handler: BatchHandler,
                ledger: CommitLedger,
                on_assigned: Callable[[Any], Awaitable[None]] | None,
                made: list[Any]) -> None:
    """The raw consumer's task and the timers that finish its work when no input arrives.

    The aiokafka consumer is made in the task (on the app's running loop) and appended to
    ``made``, where the health probe finds it for the lag of the raw partitions.
    """

    @app.task
    async def ingest() -> None:
        consumer = _raw_kafka_consumer(config)
        made.append(consumer)
        raw = RawConsumer(consumer, handler, ledger, max_records=config.batch_max,
                          timeout_s=config.batch_within_s, linger_s=config.batch_linger_s,
                          on_assigned=on_assigned)
        raw.subscribe(config.topics.inputs())
        await consumer.start()
        try:
            await raw.run(should_stop=lambda: bool(app.should_stop))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # As an agent under CrashingSupervisor did: the worker exits 1 and systemd
            # restarts it; what did not land is read again.
            log.exception("raw ingest crashed error=%s", exc)
            await app.crash(exc)
        finally:
            await consumer.stop()

    @app.timer(0.5)
    async def settle_idle() -> None:
        # With no new input the consumer's loop only polls: settle finished writes here so
        # their offsets are committed without waiting for the next message.
        await handler.settle_idle()

    @app.timer(1.0)
    async def close_steps() -> None:
        await handler.close_steps()


def _add_report(app: faust.App, ingestor: Ingestor, sink: StoreSink,
                handler: BatchHandler) -> None:
    """A progress line every 10 s."""
    @app.timer(10.0)
    async def report() -> None:
        c, q = sink.counters, handler.quarantine
        log.info(
            "worker progress records=%d rejected=%d stage_errors=%d jobs_reset=%d rows=%d "
            "lines=%d batches=%d retries=%d last_batch_ms=%.1f store_rejected=%s store_down=%s",
            ingestor.accepted, sum(ingestor.rejected.values()), q.total(), q.jobs_reset, c.rows,
            c.lines, c.batches, c.retries, c.last_batch_s * 1000, c.rejected, c.store_down)
