"""StateSnapshots: two alternating slots, spacing by export time, restore on assignment."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import msgspec

from tests.pipeline.fakes import Clock, FakeTopic, run, spin
from trainguard.pipeline.snapshots import StateSnapshots
from trainguard.pipeline.state import partition_key


class FakeState:
    """Per-partition state as bytes; export takes ``export_s`` on the clock."""

    def __init__(self, clock: Clock, blobs: dict[str, bytes], export_s: float = 0.0) -> None:
        self.clock, self.blobs, self.export_s = clock, blobs, export_s
        self.dropped: list[str] = []

    def partitions(self) -> set[str]:
        return set(self.blobs)

    def export(self, part: str) -> bytes:
        self.clock.advance(self.export_s)
        return self.blobs[part]

    def load(self, part: str, blob: bytes) -> int:
        self.blobs[part] = blob
        return 1

    def drop(self, part: str) -> int:
        self.dropped.append(part)
        del self.blobs[part]
        return 1


class _TP(NamedTuple):
    topic: str
    partition: int


def _tp(topic: str, partition: int) -> _TP:
    return _TP(topic, partition)


def _snapshots(state: FakeState, topic: FakeTopic, clock: Clock, read=None) -> StateSnapshots:
    gen = iter(range(1, 100))
    return StateSnapshots(state, topic, inputs=["in"], every_s=5.0,
                          read=read or (lambda keys: {}), clock=clock,
                          generation=lambda: next(gen))


def test_successive_snapshots_alternate_between_two_slots() -> None:
    async def main() -> None:
        clock = Clock()
        topic = FakeTopic()
        snaps = _snapshots(FakeState(clock, {"in:0": b"abc"}), topic, clock)
        for _ in range(3):
            await snaps.write()
        assert [s.key for s in topic.sent] == [b"in:0#0.0", b"in:0#1.0", b"in:0#0.0"]
        generations = [msgspec.msgpack.decode(s.value)[0] for s in topic.sent]
        assert generations == [1, 2, 3]

    run(main())


def test_a_smaller_snapshot_tombstones_the_slots_extra_chunks() -> None:
    async def main() -> None:
        clock = Clock()
        topic = FakeTopic()
        state = FakeState(clock, {"in:0": b"x" * (512 * 1024 * 2)})  # two chunks
        snaps = _snapshots(state, topic, clock)
        await snaps.write()  # slot 0: two chunks
        await snaps.write()  # slot 1
        state.blobs["in:0"] = b"small"
        topic.sent.clear()
        await snaps.write()  # slot 0 again: one chunk, the second tombstoned
        assert [(s.key, s.value is None) for s in topic.sent] == [
            (b"in:0#0.0", False), (b"in:0#0.1", True)]

    run(main())


def test_write_returns_only_after_kafka_acked_every_chunk() -> None:
    async def main() -> None:
        clock = Clock()
        topic = FakeTopic(auto_ack=False)
        snaps = _snapshots(FakeState(clock, {"in:0": b"a", "in:1": b"b"}), topic, clock)
        task = asyncio.create_task(snaps.write())
        await spin()
        assert len(topic.sent) == 2 and not task.done()
        topic.ack_all()
        assert await task == 2

    run(main())


def test_snapshots_are_spaced_by_ten_times_their_export_time() -> None:
    async def main() -> None:
        clock = Clock()
        snaps = _snapshots(FakeState(clock, {"in:0": b"a"}, export_s=2.0), FakeTopic(), clock)
        assert not snaps.due()
        clock.advance(5.0)
        assert snaps.due()
        await snaps.write()  # took 2 s: the next is 20 s away, not 5
        clock.advance(19.0)
        assert not snaps.due()
        clock.advance(1.0)
        assert snaps.due()

    run(main())


def test_reassignment_drops_stale_partitions_keeps_staying_ones_and_loads_new() -> None:
    async def main() -> None:
        clock = Clock()
        state = FakeState(clock, {"in:0": b"live0", "in:1": b"live1"})
        asked: list[set[str]] = []

        def read(keys: set[str]) -> dict[str, bytes]:
            asked.append(set(keys))
            return {k: b"restored" for k in keys}

        snaps = _snapshots(state, FakeTopic(), clock, read)
        await snaps.on_assigned({_tp("in", 1), _tp("in", 2), _tp("other", 0)})
        assert state.dropped == ["in:0"]
        assert asked == [{partition_key("in", 2)}]  # only what is missing; other topics ignored
        assert state.blobs == {"in:1": b"live1", "in:2": b"restored"}

    run(main())


def test_batches_wait_while_an_assignment_loads() -> None:
    async def main() -> None:
        clock = Clock()
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()

        def read(keys: set[str]) -> dict[str, bytes]:
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)
            return {}

        snaps = _snapshots(FakeState(clock, {}), FakeTopic(), clock, read)
        moving = asyncio.create_task(snaps.on_assigned({_tp("in", 0)}))
        await spin()
        waiting = asyncio.create_task(snaps.wait_ready())
        await spin()
        assert not waiting.done()
        gate.set()
        await moving
        await asyncio.wait_for(waiting, 1)

    run(main())
