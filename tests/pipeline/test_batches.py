"""BatchHandler: the order of publish, store write, offset release and snapshot per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from tests.pipeline.alerts.test_lifecycle import finding
from tests.pipeline.fakes import FakeEvent, FakeTopic, anomaly, events, faust_acks, run, spin
from tests.pipeline.test_ingest import TOPICS, _batch
from trainguard.pipeline.batches import BatchHandler
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.publish import Publisher
from trainguard.schemas.codec import encode


class Writes:
    """A store whose writes finish when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[Mapping[str, Sequence[Any]], Any]] = []
        self.futures: list[asyncio.Future[int]] = []

    def __call__(self, rows: Mapping[str, Sequence[Any]], lines: Any) -> asyncio.Future[int]:
        self.calls.append((rows, lines))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class Topics:
    def __init__(self, auto_ack: bool = True) -> None:
        self.dead, self.anomalies, self.findings = (FakeTopic(auto_ack) for _ in range(3))

    def publisher(self) -> Publisher:
        return Publisher("w", dead_letters=self.dead, anomalies=self.anomalies,
                         findings=self.findings)


def _handler(topics: Topics, writes: Writes, **kw: Any) -> tuple[BatchHandler, list[int]]:
    out: list[int] = []
    held = HeldOffsets(lambda e: out.append(e.message.offset))
    kw.setdefault("offsets", held)
    return BatchHandler(Ingestor(TOPICS), topics.publisher(), write=writes, **kw), out


def _good(offsets: range) -> list[FakeEvent]:
    return events(TOPICS.samples, offsets, values=[encode(_batch()) for _ in offsets])


async def _handle(handler: BatchHandler, batch: list[FakeEvent]) -> None:
    await handler.handle(batch)
    faust_acks(batch)  # what take_events does after the body


def test_dead_letters_are_acked_by_kafka_before_the_store_write_starts() -> None:
    async def main() -> None:
        topics, writes = Topics(auto_ack=False), Writes()
        handler, _ = _handler(topics, writes)
        batch = events(TOPICS.samples, range(2), values=[b"nope", encode(_batch())])
        task = asyncio.create_task(handler.handle(batch))
        await spin()
        assert len(topics.dead.sent) == 1 and writes.calls == []
        topics.dead.ack_all()
        await task
        [(rows, lines)] = writes.calls
        assert rows["dead_letters"][0]["offset"] == 0 and sum(map(len, lines.values())) == 1

    run(main())


def test_offsets_go_only_after_the_write_and_at_most_two_writes_are_in_flight() -> None:
    async def main() -> None:
        topics, writes = Topics(), Writes()
        handler, out = _handler(topics, writes)
        await _handle(handler, _good(range(0, 2)))
        assert out == [] and len(writes.calls) == 1  # first write in flight, body returned
        second = asyncio.create_task(_handle(handler, _good(range(2, 4))))
        await spin()
        assert not second.done() and len(writes.calls) == 2  # two in flight: waits
        writes.futures[0].set_result(2)
        await second
        assert out == [0, 1]
        writes.futures[1].set_result(2)
        await handler.settle_idle()
        assert out == [0, 1, 2, 3]

    run(main())


def test_a_failed_write_crashes_the_agent_without_releasing_its_offsets() -> None:
    async def main() -> None:
        topics, writes = Topics(), Writes()
        handler, out = _handler(topics, writes)
        await _handle(handler, _good(range(0, 1)))
        writes.futures[0].set_exception(RuntimeError("store gave up"))
        try:
            await _handle(handler, _good(range(1, 2)))
        except RuntimeError:
            pass
        else:
            raise AssertionError("the store error must propagate")
        await handler.stop()
        assert out == []
        writes.futures[1].cancel()

    run(main())


class _Baselines:
    def __init__(self) -> None:
        self.observed = 0

    def observe(self, decoded: Sequence[Any], sources: Sequence[str]) -> list[Any]:
        self.observed += len(decoded)
        return [anomaly()]

    def snapshot_due(self) -> bool:
        return True

    def snapshot_rows(self) -> list[dict[str, Any]]:
        return [{"baseline": 1}]


class _Snapshots:
    def __init__(self, held: HeldOffsets) -> None:
        self.held, self.in_flight_at_write = held, [-1]

    async def wait_ready(self) -> None:
        return None

    def due(self) -> bool:
        return True

    async def write(self) -> int:
        self.in_flight_at_write.append(len(self.held))
        return 1


def test_anomalies_and_baselines_ride_with_the_batch_and_snapshot_waits_for_every_write() -> None:
    async def main() -> None:
        topics, writes = Topics(), Writes()
        held = HeldOffsets(lambda e: None)
        snaps = _Snapshots(held)
        handler, _ = _handler(topics, writes, offsets=held, baselines=_Baselines(),
                              snapshots=snaps)
        task = asyncio.create_task(_handle(handler, _good(range(0, 1))))
        await spin()
        assert not task.done() and snaps.in_flight_at_write == [-1]  # waits for the write
        writes.futures[0].set_result(1)
        await task
        assert snaps.in_flight_at_write == [-1, 0]
        assert [s.key for s in topics.anomalies.sent] == [b"node-03/2"]
        rows = writes.calls[0][0]
        assert len(rows["anomalies"]) == 1 and rows["baselines"] == [{"baseline": 1}]

    run(main())


class _Consistency:
    def __init__(self) -> None:
        self.pending = [finding()]

    def observe(self, decoded: Sequence[Any], broker_ts: Sequence[Any] = ()) -> list[Any]:
        return []

    def flush(self) -> list[Any]:
        out, self.pending = self.pending, []
        return out


def test_close_steps_publishes_expired_findings_then_stores_them() -> None:
    async def main() -> None:
        topics, writes = Topics(), Writes()
        handler, _ = _handler(topics, writes, consistency=_Consistency())
        task = asyncio.create_task(handler.close_steps())
        await spin()
        assert [s.key for s in topics.findings.sent] == [b"job-1"]
        writes.futures[0].set_result(1)
        await task
        assert len(writes.calls[0][0]["findings"]) == 1
        await handler.close_steps()  # nothing left: no write
        assert len(writes.calls) == 1

    run(main())
