"""One ``take_events`` batch through the stages, with its store write pipelined.

:class:`BatchHandler` is the body of the worker's ingest agent, free of Faust: decode and
validate (:class:`~trainguard.pipeline.ingest.Ingestor`), publish dead letters, judge
baselines and consistency, publish what they found, then start the batch's store write
and hand its events to :class:`~trainguard.pipeline.offsets.HeldOffsets`. The order is
what makes it at-least-once: everything published for a batch is acknowledged by Kafka
before its store write starts, and its offsets go only after that write landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.dead_letters import RawMessage
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.publish import Publisher
from trainguard.pipeline.sinks.rows import Row
from trainguard.pipeline.snapshots import StateSnapshots

__all__ = ["WRITES_IN_FLIGHT", "BatchHandler", "StoreWrite"]

#: Store writes that may run while the next batch is processed. Two overlap the store
#: (its own threads, or a server) with this process's Python work; more would only queue.
WRITES_IN_FLIGHT = 2

#: Starts one store write of rows and intake lines on the store's thread; the future
#: completes when it landed (or raises when the sink gave up).
StoreWrite = Callable[
    [Mapping[str, Sequence[Row]], Mapping[str, Sequence[bytes]] | None], asyncio.Future[Any]
]


class BatchHandler:
    """Feeds batches of Kafka events to the stages and holds their offsets until stored."""

    def __init__(
        self, ingestor: Ingestor, publisher: Publisher, offsets: HeldOffsets, write: StoreWrite,
        *, baselines: BaselineStage | None = None, consistency: ConsistencyStage | None = None,
        snapshots: StateSnapshots | None = None, writes_in_flight: int = WRITES_IN_FLIGHT,
    ) -> None:
        self._ingestor, self._publisher = ingestor, publisher
        self._offsets, self._write = offsets, write
        self._baselines, self._consistency = baselines, consistency
        self._snapshots, self._writes_in_flight = snapshots, writes_in_flight

    async def handle(self, events: Sequence[Any]) -> None:
        """Process one batch; its offsets are released once its rows are in the store."""
        # Hold every message until its batch is in the store: take_events acks the batch
        # when the agent body returns, and the write below may still be running then.
        self._offsets.hold(events)
        result = self._ingestor.ingest([RawMessage.of(e.message) for e in events])
        await self._publisher.dead_letters(result.dead, result.rows)
        if self._baselines is not None:
            if self._snapshots is not None:
                await self._snapshots.wait_ready()
            found = self._baselines.observe(result.decoded, result.sources)
            await self._publisher.anomalies(found, result.rows)
            if self._baselines.snapshot_due():
                result.rows["baselines"] = self._baselines.snapshot_rows()
        if self._consistency is not None:
            await self._publisher.findings(
                self._consistency.observe(result.decoded, result.broker_ts), result.rows)
        # Pipelined: the store writes this batch while the next one is decoded and
        # judged. Writes run one at a time, in order, on the store thread.
        self._offsets.add(self._write(result.rows, result.lines), events)
        await self._offsets.settle(self._writes_in_flight)
        if self._snapshots is not None and self._snapshots.due():
            # After every write landed: a snapshot never holds an alarm whose anomaly is
            # not stored, nor points of a batch that a crash would replay.
            await self._offsets.settle_all()
            await self._snapshots.write()

    async def stop(self) -> None:
        """Stopping or crashing: release what already landed so its offsets are committed."""
        await self._offsets.settle_landed()

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
        found = self._consistency.flush()
        if found:
            rows: dict[str, list[Row]] = {}
            await self._publisher.findings(found, rows)
            await self._write(rows, None)
