"""One batch of raw messages through the stages, with its store write pipelined.

:class:`BatchHandler` is what the raw consumer (:mod:`trainguard.pipeline.raw_consumer`)
feeds, free of Kafka clients: decode and
validate (:class:`~trainguard.pipeline.ingest.Ingestor`), publish dead letters (and the
``forged_telemetry`` findings of refused messages), judge
baselines and consistency, publish what they found, then start the batch's store write
and hand its offsets to :class:`~trainguard.pipeline.offsets.HeldOffsets`. The order is
what makes it at-least-once: everything published for a batch is acknowledged by Kafka
before its store write starts, and its offsets go only after that write landed.

A stage that raises costs only the records that make it raise
(:mod:`trainguard.pipeline.quarantine`): the baselines bisect the batch down to them; the
consistency stage runs job by job, and a job whose checks raise has its state dropped and
its records of the batch fed again one at a time. Each failing record is a dead letter
with reason ``stage_error``, published with the batch's.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.dead_letters import DeadLetter, RawMessage
from trainguard.pipeline.ingest import Ingestor, IngestResult
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.publish import Publisher
from trainguard.pipeline.quarantine import Quarantine, isolate
from trainguard.pipeline.sinks.column_rows import ColumnRows
from trainguard.pipeline.sinks.intake import IntakeItem
from trainguard.pipeline.sinks.rows import Row
from trainguard.pipeline.sinks.sources import IngestSources, SourceOf
from trainguard.pipeline.snapshots import StateSnapshots
from trainguard.schemas.records import (
    Anomaly,
    CheckpointEvent,
    Finding,
    GpuSampleBatch,
    Heartbeat,
    Record,
    StepBatch,
    StepRecord,
    WitnessReport,
)

__all__ = ["WRITES_IN_FLIGHT", "BatchHandler", "StoreWrite"]

#: Store writes that may run while the next batch is processed. Two overlap the store
#: (its own threads, or a server) with this process's Python work. Three drained ~4 % more
#: messages per second at 10,000 nodes, but the real-time p99 at 5,000 nodes was worse in
#: their runs (1.53-2.52 s against 1.38-1.80 s with two; BENCHMARKS.md, round 10).
WRITES_IN_FLIGHT = 2

#: Starts one store write of rows and intake items on the store's thread; the future
#: completes when it landed (or raises when the sink gave up). The third argument names
#: the message behind a row the store refuses (see ``StoreSink.write``).
StoreWrite = Callable[
    [Mapping[str, Sequence[Row]], Mapping[str, Sequence[IntakeItem]] | None, SourceOf | None],
    asyncio.Future[Any],
]


class BatchHandler:
    """Feeds batches of Kafka messages to the stages and holds their offsets until stored."""

    def __init__(
        self, ingestor: Ingestor, publisher: Publisher, offsets: HeldOffsets, write: StoreWrite,
        *, baselines: BaselineStage | None = None, consistency: ConsistencyStage | None = None,
        snapshots: StateSnapshots | None = None, writes_in_flight: int = WRITES_IN_FLIGHT,
        quarantine: Quarantine | None = None,
    ) -> None:
        self._ingestor, self._publisher = ingestor, publisher
        self._offsets, self._write = offsets, write
        self._baselines, self._consistency = baselines, consistency
        self._snapshots, self._writes_in_flight = snapshots, writes_in_flight
        #: Stage failures: counted per stage, logged rate-limited, records dead-lettered.
        self.quarantine = quarantine if quarantine is not None else Quarantine()

    async def handle(self, messages: Sequence[RawMessage], held: Sequence[Any]) -> None:
        """Process one batch; ``held`` is released once its rows are in the store.

        ``held`` stands for the batch's offsets: the raw consumer's one
        :class:`~trainguard.pipeline.raw_consumer.OffsetMark`, or Faust events.
        """
        # Hold until the batch is in the store: a Faust stream acks its events when the
        # agent body returns, and the write below may still be running then.
        self._offsets.hold(held)
        result = self._ingestor.ingest(list(messages))
        sources = IngestSources(messages, result)  # store refusals: see _store
        await self._publisher.dead_letters(result.dead, result.rows)
        if result.findings:  # forged telemetry, found at ingest
            await self._publisher.findings(result.findings, result.rows)
        dead: list[DeadLetter] = []
        snapshot: ColumnRows | None = None
        if self._baselines is not None:
            if self._snapshots is not None:
                await self._snapshots.wait_ready()
            await self._publisher.anomalies(self._observe_baselines(result, dead), result.rows)
            snapshot = self._snapshot_baselines()
        if self._consistency is not None:
            await self._publisher.findings(self._observe_consistency(result, dead),
                                           result.rows)
        await self._publisher.dead_letters(dead, result.rows)
        # Pipelined: the store writes this batch while the next one is decoded and
        # judged. Writes run one at a time, in order, on the store thread.
        # The snapshot joins the rows last: the findings and dead letters above went to
        # result.rows after it was taken.
        rows: Mapping[str, Sequence[Row]] = (
            result.rows if snapshot is None else {**result.rows, "baselines": snapshot})
        self._offsets.add(self._store(rows, result.lines, sources), held)
        await self._offsets.settle(self._writes_in_flight)
        if self._snapshots is not None and self._snapshots.due():
            # Copies of every partition now, sent once every write in flight landed: a
            # snapshot never holds an alarm whose anomaly is not stored, nor points of a
            # batch that a crash would replay. Every partition at once: a round spread over
            # batches would stall while no input arrives, and a crash meanwhile would find
            # partitions without their snapshot. Packed and sent while the next batches run.
            await self._snapshots.start(after=self._offsets.writes())

    def _observe_baselines(self, result: IngestResult, dead: list[DeadLetter]) -> list[Anomaly]:
        """The batch's anomalies; records the stage raises on are bisected out."""
        stage = self._baselines
        assert stage is not None
        decoded, sources = result.decoded, result.sources

        def run(idx: Sequence[int]) -> list[Anomaly]:
            if len(idx) == len(decoded):
                return stage.observe(decoded, sources)
            return stage.observe([decoded[i] for i in idx], [sources[i] for i in idx])

        def bad(i: int, exc: Exception) -> None:
            self._dead(dead, "baselines", exc, result, i)

        # Replaying a record is harmless: a bank skips points not after a row's last one.
        return isolate(run, range(len(decoded)), bad)

    def _snapshot_baselines(self) -> ColumnRows | None:
        """The ``baselines`` table's snapshot rows when one is due."""
        stage = self._baselines
        assert stage is not None
        try:
            if stage.snapshot_due():
                return stage.snapshot_rows()
        except Exception as exc:  # the snapshot table is a convenience; never the worker
            self.quarantine.failed("baselines_snapshot", exc)
        return None

    def _observe_consistency(self, result: IngestResult,
                             dead: list[DeadLetter]) -> list[Finding]:
        """The batch's findings, job by job; a job whose checks raise starts over."""
        stage = self._consistency
        assert stage is not None
        decoded, broker_ts, sources = result.decoded, result.broker_ts, result.sources
        out: list[Finding] = []
        for job_id, idx in _by_job(decoded, sources).items():
            try:
                out += stage.observe([decoded[i] for i in idx], [broker_ts[i] for i in idx],
                                     [sources[i] for i in idx])
                continue
            except Exception as exc:
                # Its state may be half-updated (a step closed but not checked): drop it
                # and feed the batch's records again one by one, to find the culprits.
                self._reset_jobs(_jobs_of(decoded[i] for i in idx), exc)
            for i in idx:
                try:
                    out += stage.observe([decoded[i]], [broker_ts[i]], [sources[i]])
                except Exception as exc:
                    self._reset_jobs(_jobs_of([decoded[i]]), exc, quiet=True)
                    self._dead(dead, "consistency", exc, result, i, job=job_id)
        return out

    def _reset_jobs(self, job_ids: list[str], exc: Exception, *, quiet: bool = False) -> None:
        stage = self._consistency
        assert stage is not None
        dropped = [j for j in job_ids if stage.forget(j)]
        self.quarantine.job_reset("consistency", dropped, exc, quiet=quiet)

    def _dead(self, dead: list[DeadLetter], stage: str, exc: Exception, result: IngestResult,
              i: int, **context: object) -> None:
        dead.append(self.quarantine.dead_letter(stage, exc, result.messages[i], **context))

    def _store(self, rows: Mapping[str, Sequence[Row]],
               lines: Mapping[str, Sequence[IntakeItem]],
               sources: SourceOf) -> asyncio.Future[Any]:
        """Start the write; its future completes once the rows the store refused are copied.

        The sink already stored their ``dead_letters`` rows; here they go to the topic.
        """
        write = self._write(rows, lines, sources)

        async def copy_refused() -> Any:
            written = await write
            dead = getattr(written, "dead", None)
            if dead:
                await self._publisher.dead_letters(dead, {})  # rows: the sink stored them
            return written

        return asyncio.ensure_future(copy_refused())

    async def drain(self) -> None:
        """Wait for every write in flight and release its offsets (before a handover).

        A snapshot round in flight is sent first too: the partitions' next owners read it.
        """
        await self._offsets.settle_all()
        if self._snapshots is not None:
            await self._snapshots.settle()

    async def stop(self) -> None:
        """Stopping or crashing: release what already landed so its offsets are committed.

        A snapshot round still being sent is abandoned: the previous one stays whole.
        """
        await self._offsets.settle_landed()
        if self._snapshots is not None:
            self._snapshots.cancel()

    async def settle_idle(self) -> None:
        """With no new input, release finished writes without waiting for the next batch."""
        await self._offsets.settle_done()

    async def close_steps(self) -> None:
        """Publish and store the findings of steps whose bounded wait expired.

        They close here too when no new batch arrives to close them, by the jobs' own
        event time; their findings go out like the others.
        """
        if self._consistency is None:
            return
        found = self._consistency.flush(on_error=self._flush_failed)
        if found:
            rows: dict[str, list[Row]] = {}
            await self._publisher.findings(found, rows)
            await self._write(rows, None, None)

    def _flush_failed(self, job_id: str, exc: Exception) -> None:
        """A job's checks raised while its expired steps closed: its state was dropped."""
        self.quarantine.job_reset("consistency", [job_id], exc, quiet=True)
        self.quarantine.failed("consistency_flush", exc, job=job_id)


def _by_job(records: Sequence[Record],
            sources: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Indices of the records the consistency stage reads, per job, in event-time order.

    Heartbeats and sample batches of nodes without a job go under ``""`` (no job id is
    empty): they only tell the stage which agents are alive and which nodes are idle.

    With ``sources`` (each record's input partition) a job's records of each partition
    stay in offset order and the partitions' runs are merged by event time. ``getmany``
    hands a batch partition by partition, so a batch that catches up on a backlog (after
    a restart or a failover) would otherwise show the stage every sample batch of those
    ticks before any step batch: a GPU released at one of them would be judged before
    the steps that say which rank ran on it, and the finding would name no rank. A
    record's own time moves it only against the other partitions' runs, never within its
    own.
    """
    out: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        if isinstance(rec, StepBatch | StepRecord | CheckpointEvent):
            out.setdefault(rec.job_id, []).append(i)
        elif isinstance(rec, GpuSampleBatch | Heartbeat):
            out.setdefault(rec.job_id or "", []).append(i)
        elif isinstance(rec, WitnessReport) and rec.job_id is not None:
            out.setdefault(rec.job_id, []).append(i)
    if sources is not None:
        for job_id, idx in out.items():
            out[job_id] = _merged_runs(idx, records, sources)
    return out


def _merged_runs(idx: list[int], records: Sequence[Record],
                 sources: Sequence[str]) -> list[int]:
    """``idx`` with each source's run kept in order, the runs merged by record time."""
    runs: dict[str, list[int]] = {}
    for i in idx:
        runs.setdefault(sources[i], []).append(i)
    if len(runs) == 1:
        return idx
    # heapq.merge is stable: on a tie the earlier run (partition) goes first, as before.
    return list(heapq.merge(*runs.values(), key=lambda i: records[i].ts))


def _jobs_of(records: Iterable[Record]) -> list[str]:
    """Every job the records touch (an agent may mix jobs in one step batch)."""
    jobs: dict[str, None] = {}
    for rec in records:
        job_id = getattr(rec, "job_id", None)
        if isinstance(job_id, str):
            jobs[job_id] = None
        if isinstance(rec, StepBatch):
            jobs.update((s.job_id, None) for s in rec.steps)
    return list(jobs)
