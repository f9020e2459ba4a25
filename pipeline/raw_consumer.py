"""The raw topics' batch consumer: ``getmany`` batches straight into the stages.

Faust hands an agent one event at a time: per message it builds a ``Message`` and an
``Event``, races the delivery against its flow-control event (two tasks), queues it, and
acks it through its sensors. That machinery cost ~200 µs per message here, more than
decoding, judging and storing the message together (BENCHMARKS.md, "Where the time
goes"). The raw topics (samples, steps, heartbeats) are the bulk of the input, so the
worker reads them with one aiokafka consumer of its own, ``getmany`` at a time, and hands
each batch as plain :class:`~trainguard.pipeline.dead_letters.RawMessage` objects to the
:class:`~trainguard.pipeline.batches.BatchHandler`. Faust keeps what it is good at: the
stateful downstream agents (findings → alerts → deliveries), timers and the metrics side.

Offsets: a batch's next offsets travel as one :class:`OffsetMark` through
:class:`~trainguard.pipeline.offsets.HeldOffsets`, exactly where Faust events went: it
is released only once the batch's rows are in the store and everything published for it
was acknowledged, and the :class:`CommitLedger` commits what was released, every
``commit_every_s`` and before partitions are handed away. A kill loses at most the
uncommitted tail, which is read again and deduplicated by the store's
ReplacingMergeTree tables (exactly once at table level, as before).

Assignment: the consumer group is the app id plus ``-raw``, with Kafka's range
assignor, so partition *i* of every raw topic goes to the same worker (a job's steps and
its nodes' sample batches meet when they share a key's partition). The handler's
state snapshots follow the assignment through ``on_assigned``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from trainguard.pipeline.dead_letters import RawMessage

__all__ = ["CommitLedger", "OffsetMark", "RawConsumer", "raw_group", "raw_messages"]

log = logging.getLogger(__name__)

#: A topic partition (aiokafka's ``TopicPartition``: a named tuple of topic, partition).
TP = Any


def raw_group(app_id: str) -> str:
    """The consumer group of the workers' raw consumers (Faust's own group is ``app_id``)."""
    return f"{app_id}-raw"


class BatchSink(Protocol):
    """What the consumer feeds: :class:`~trainguard.pipeline.batches.BatchHandler`."""

    async def handle(self, messages: Sequence[RawMessage], held: Sequence[Any]) -> None:
        """Process one batch; release ``held`` once its effects landed."""
        ...

    async def drain(self) -> None:
        """Wait until every write in flight landed and its offsets were released."""
        ...

    async def stop(self) -> None:
        """Release what already landed (stopping or crashing)."""
        ...


class OffsetMark:
    """One batch's next offset per partition, held like a Faust event until it landed.

    :class:`~trainguard.pipeline.offsets.HeldOffsets` takes a reference on
    ``event.message`` and acks ``event``; a mark is its own message and its one ack is the
    last, so the ledger hears of it once, when the batch landed.
    """

    __slots__ = ("message", "offsets")

    def __init__(self, offsets: Mapping[TP, int]) -> None:
        self.offsets = dict(offsets)
        self.message = self

    def incref(self, n: int = 1) -> None:
        """Nothing to count: a mark is held by one batch only."""

    def ack(self) -> bool:
        """Always the last reference: release it."""
        return True

    def __repr__(self) -> str:
        return f"OffsetMark({self.offsets!r})"


class CommitLedger:
    """Offsets whose batches landed, not yet committed (the highest per partition)."""

    def __init__(self) -> None:
        self._pending: dict[TP, int] = {}
        #: Commits made, and commits the broker refused (a rebalance got there first).
        self.commits = 0
        self.failed = 0

    def released(self, mark: OffsetMark) -> None:
        """``mark``'s batch landed: its offsets may be committed."""
        for tp, offset in mark.offsets.items():
            if offset > self._pending.get(tp, -1):
                self._pending[tp] = offset

    def take(self, assigned: Iterable[TP] | None = None) -> dict[TP, int]:
        """The offsets to commit now (of ``assigned`` partitions only), forgetting them.

        A partition no longer assigned is dropped: its new owner reads from the last
        commit and the store deduplicates what it reads twice.
        """
        out, self._pending = self._pending, {}
        if assigned is not None:
            keep = set(assigned)
            out = {tp: off for tp, off in out.items() if tp in keep}
        return out


def raw_messages(batch: Mapping[TP, Sequence[Any]]) -> tuple[list[RawMessage], OffsetMark]:
    """``getmany``'s records as plain messages, and the mark of the offsets after them.

    Timestamps become seconds (as Faust gives them); a record without one (aiokafka's
    ``-1`` or ``None``) has none, so the worker's clock stands in for it.
    """
    messages: list[RawMessage] = []
    offsets: dict[TP, int] = {}
    for tp, records in batch.items():
        if not records:
            continue
        for r in records:
            ts = r.timestamp
            headers = r.headers
            messages.append(RawMessage(
                r.topic, r.partition, r.offset, r.key, r.value,
                ts / 1000.0 if ts is not None and ts >= 0 else None,
                tuple(headers) if headers else ()))
        offsets[tp] = records[-1].offset + 1
    return messages, OffsetMark(offsets)


class RawConsumer:
    """Reads the raw topics in batches; commits each batch's offsets once it landed.

    ``consumer`` is an aiokafka ``AIOKafkaConsumer`` (subscribed by :meth:`subscribe`),
    ``sink`` the batch handler, ``ledger`` the one its offsets' ``on_out`` feeds, and
    ``on_assigned`` is awaited with each new assignment (state snapshots load there).
    """

    def __init__(
        self, consumer: Any, sink: BatchSink, ledger: CommitLedger, *, max_records: int,
        timeout_s: float, linger_s: float = 0.0, commit_every_s: float = 1.0,
        on_assigned: Callable[[set[TP]], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer, self._sink, self._ledger = consumer, sink, ledger
        self._max_records, self._timeout_ms = max_records, max(1, int(timeout_s * 1000))
        self._linger_s = linger_s
        self._commit_every_s, self._clock = commit_every_s, clock
        self._on_assigned = on_assigned
        self._next_commit = clock() + commit_every_s
        # Held while a batch is handled: a rebalance waits for it before handing away.
        self._busy = asyncio.Lock()
        #: Batches and messages handed to the sink since start.
        self.batches = 0
        self.messages = 0

    def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe to ``topics`` with the rebalance hooks below."""
        from aiokafka.abc import ConsumerRebalanceListener

        outer = self

        class _Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await outer.on_revoked(set(revoked))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await outer.on_assigned(set(assigned))

        self._consumer.subscribe(topics=list(topics), listener=_Listener())

    async def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Consume until ``should_stop()`` or cancellation; commit what landed on the way out."""
        try:
            while not should_stop():
                await self.poll_once()
        finally:
            await self._sink.stop()  # releases the writes that landed (never the others)
            await self.commit()

    async def poll_once(self) -> int:
        """Read and handle one batch (empty after the timeout); commit if due."""
        batch = await self._consumer.getmany(timeout_ms=self._timeout_ms,
                                             max_records=self._max_records)
        n = 0
        if batch:
            async with self._busy:
                batch = await self._linger(batch)
                messages, mark = raw_messages(batch)
                n = len(messages)
                if n:
                    await self._sink.handle(messages, [mark])
                    self.batches += 1
                    self.messages += n
        if self._clock() >= self._next_commit:
            await self.commit()
        return n

    async def _linger(self, batch: dict[TP, list[Any]]) -> dict[TP, list[Any]]:
        """``batch`` topped up with what arrives within ``linger_s``, up to ``max_records``.

        Agents send once a second, all at about the same time: the first poll of a tick
        returns part of it. Waiting a moment for the rest makes one batch of the tick, so
        one store insert per table instead of several (each insert is a part to merge).
        """
        if self._linger_s <= 0:
            return batch
        batch = {tp: list(records) for tp, records in batch.items()}  # getmany's, not ours
        n = sum(len(v) for v in batch.values())
        deadline = self._clock() + self._linger_s
        while n < self._max_records:
            left_ms = int((deadline - self._clock()) * 1000)
            if left_ms <= 0:
                break
            more = await self._consumer.getmany(timeout_ms=left_ms,
                                                max_records=self._max_records - n)
            if not more:  # nothing came in the time left
                break
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                n += len(records)
        return batch

    async def commit(self, held: Iterable[TP] | None = None) -> None:
        """Commit the offsets of every batch that landed, of partitions still ``held``.

        ``held`` defaults to the consumer's assignment; while a rebalance revokes, the
        revoked partitions (aiokafka's assignment may read empty then).
        """
        self._next_commit = self._clock() + self._commit_every_s
        offsets = self._ledger.take(self._consumer.assignment() if held is None else held)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._ledger.commits += 1
        except Exception as exc:  # a rebalance or a broker hiccup: the batches are re-read
            self._ledger.failed += 1
            log.warning("raw offsets commit failed partitions=%d error=%s", len(offsets), exc)

    async def on_revoked(self, revoked: set[TP]) -> None:
        """Before partitions go: finish the batch in hand, land its writes, commit them."""
        async with self._busy:
            await self._sink.drain()
            await self.commit(revoked)
        log.info("raw partitions revoked count=%d", len(revoked))

    async def on_assigned(self, assigned: set[TP]) -> None:
        """A new assignment: let the state snapshots follow it."""
        log.info("raw partitions assigned count=%d", len(assigned))
        if self._on_assigned is not None:
            await self._on_assigned(assigned)
