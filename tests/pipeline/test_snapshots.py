"""StateSnapshots: two alternating slots, spacing by export time, restore on assignment."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import msgspec
import pytest

from tests.pipeline.fakes import Clock, FakeTopic, run, spin
from trainguard.errors import ConfigError
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.snapshots import StageStates, StateSnapshots
from trainguard.pipeline.state import partition_key
from trainguard.pipeline.store.url import StoreUrl


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
        assert snaps.health()["state_snapshot_last_round_s"] == 2.0
        assert snaps.health()["state_snapshot_rounds"] == 1.0
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


class RaisingState(FakeState):
    """A stage whose load raises, as a damaged blob makes the baselines' do."""

    def load(self, part: str, blob: bytes) -> int:
        raise ValueError(f"bad blob {blob!r}")


def test_stage_states_carry_each_stages_state_in_one_blob() -> None:
    clock = Clock()
    base = FakeState(clock, {"in:0": b"detectors"})
    jobs = FakeState(clock, {"in:0": b"jobs", "in:1": b"other jobs"})
    blob = StageStates(baselines=base, consistency=jobs).export("in:0")
    base2, jobs2 = FakeState(clock, {}), FakeState(clock, {})
    both = StageStates(baselines=base2, consistency=jobs2, absent=None)
    assert StageStates(baselines=base, consistency=jobs).partitions() == {"in:0", "in:1"}
    assert both.load("in:0", blob) == 2
    assert base2.blobs == {"in:0": b"detectors"} and jobs2.blobs == {"in:0": b"jobs"}
    assert both.drop("in:0") == 2 and base2.blobs == {} and jobs2.blobs == {}


def test_stage_states_read_a_baseline_only_snapshot_of_an_older_worker() -> None:
    clock = Clock()
    base, jobs = FakeState(clock, {}), FakeState(clock, {})
    assert StageStates(baselines=base, consistency=jobs).load("in:0", b"\x81\xa1a\x01") == 1
    assert base.blobs == {"in:0": b"\x81\xa1a\x01"} and jobs.blobs == {}


def test_a_stage_whose_state_fails_to_load_starts_fresh_and_is_counted() -> None:
    clock = Clock()
    good = FakeState(clock, {"in:0": b"jobs"})
    blob = StageStates(baselines=good, consistency=good).export("in:0")
    bad, fine = RaisingState(clock, {"in:0": b"stale"}), FakeState(clock, {})
    states = StageStates(baselines=bad, consistency=fine)
    assert states.load("in:0", blob) == 1
    assert states.rejected == {"baselines": 1, "consistency": 0}
    assert bad.dropped == ["in:0"] and fine.blobs == {"in:0": b"jobs"}
    # A composite blob whose envelope is damaged: every stage counts it, none raises.
    assert states.load("in:0", blob[:6]) == 0
    assert states.rejected == {"baselines": 2, "consistency": 1}


def test_the_share_of_time_snapshots_may_take_spaces_them() -> None:
    async def main() -> None:
        clock = Clock()
        gen = iter(range(1, 100))
        snaps = StateSnapshots(FakeState(clock, {"in:0": b"a", "in:1": b"b"}, export_s=1.0),
                               FakeTopic(), inputs=["in"], every_s=5.0, read=lambda keys: {},
                               clock=clock, generation=lambda: next(gen), max_share=0.05)
        clock.advance(5.0)
        await snaps.write()  # two partitions, 1 s each: the next snapshot is 2 / 0.05 s away
        clock.advance(39.0)
        assert not snaps.due()
        clock.advance(1.0)
        assert snaps.due()

    run(main())


@pytest.mark.parametrize("share", [0.0, 0.001, 0.6])
def test_a_share_of_time_for_snapshots_out_of_range_is_refused(share: float) -> None:
    with pytest.raises(ConfigError, match="state_max_share"):
        WorkerConfig(bootstrap="127.0.0.1:9092", store=StoreUrl.parse("chdb:///tmp/x"),
                     state_max_share=share)


class PackingState(FakeState):
    """State whose export leaves packing to a thread; the packing of ``in:0`` takes as
    long as a rebalance that hands ``in:1`` to another worker."""

    def __init__(self, clock: Clock, blobs: dict[str, bytes]) -> None:
        super().__init__(clock, blobs)
        self.packed_on: list[str] = []

    def export_later(self, part: str):  # type: ignore[no-untyped-def]
        blob = self.blobs[part]

        def pack() -> bytes:
            import threading

            self.packed_on.append(threading.current_thread().name)
            if part == "in:0":
                self.drop("in:1")
            return blob.upper()

        return pack


def test_packing_runs_off_the_loop_and_a_partition_handed_off_meanwhile_is_not_written() -> None:
    async def main() -> None:
        clock, topic = Clock(), FakeTopic()
        state = PackingState(clock, {"in:0": b"a", "in:1": b"b"})
        assert await _snapshots(state, topic, clock).write() == 1
        assert [s.key for s in topic.sent] == [b"in:0#0.0"]
        assert msgspec.msgpack.decode(topic.sent[0].value)[3] == b"A"  # the packed blob
        assert state.packed_on and "MainThread" not in state.packed_on

    run(main())


def test_a_round_is_sent_in_the_background_from_copies_taken_when_it_starts() -> None:
    async def main() -> None:
        clock = Clock()
        topic = FakeTopic(auto_ack=False)
        state = PackingState(clock, {"in:2": b"a"})
        snaps = _snapshots(state, topic, clock)
        clock.advance(5.0)
        await snaps.start()  # returns once the copies are taken, before anything is sent
        state.blobs["in:2"] = b"z"  # a batch moves the state on meanwhile
        assert not snaps.due()  # never two rounds at once
        await spin()
        while not topic.sent:  # packed on a thread: bounded by the test's timeout
            await asyncio.sleep(0.001)
        topic.ack_all()
        assert await snaps.settle() == 1
        assert [x.key for x in topic.sent] == [b"in:2#0.0"]
        assert msgspec.msgpack.decode(topic.sent[0].value)[3] == b"A"  # the copy, packed
        assert await snaps.settle() == 0  # nothing in flight any more

    run(main())


def test_a_failed_round_is_raised_by_the_next_start_and_only_logged_on_a_reassignment(
        caplog: pytest.LogCaptureFixture) -> None:
    class Refusing(FakeTopic):
        async def send(self, *, key: object = None, value: object = None,
                       headers: object = None) -> object:
            raise RuntimeError("broker says no")

    async def main() -> None:
        clock = Clock()
        snaps = _snapshots(FakeState(clock, {"in:0": b"a"}), Refusing(), clock)
        await snaps.start()
        await spin()
        # Seen as it fails, not a round later: logged and counted before the next start.
        assert "state snapshot round failed" in caplog.text and "broker says no" in caplog.text
        assert snaps.health()["state_snapshot_rounds_failed"] == 1.0
        with pytest.raises(RuntimeError, match="broker says no"):
            await snaps.start()
        await snaps.start()  # that round fails too; a rebalance must still go on
        await spin()
        await snaps.on_assigned([_tp("in", 0)])
        assert caplog.text.count("state snapshot round failed") == 2  # once per round
        assert snaps.health() == {"state_snapshot_rounds": 0.0,
                                  "state_snapshot_rounds_failed": 2.0,
                                  "state_snapshot_rounds_abandoned": 0.0,
                                  "state_snapshot_last_round_s": 0.0}

    run(main())


def test_a_stop_abandons_the_round_in_flight() -> None:
    async def main() -> None:
        clock = Clock()
        topic = FakeTopic(auto_ack=False)
        snaps = _snapshots(FakeState(clock, {"in:0": b"a"}), topic, clock)
        await snaps.start()
        await spin()
        snaps.cancel()
        assert await snaps.settle() == 0 and len(topic.sent) == 1  # sent, never acked

    run(main())


def test_a_round_is_sent_only_after_the_writes_it_follows_landed() -> None:
    async def main() -> None:
        clock = Clock()
        topic = FakeTopic()
        snaps = _snapshots(FakeState(clock, {"in:0": b"a"}), topic, clock)
        loop = asyncio.get_running_loop()
        landing, failing = loop.create_future(), loop.create_future()
        await snaps.start(after=[landing])
        await spin()
        assert topic.sent == []  # its batch's anomalies are not stored yet
        landing.set_result(1)
        assert await snaps.settle() == 1 and len(topic.sent) == 1
        await snaps.start(after=[failing])
        failing.set_exception(RuntimeError("store gave up"))
        assert await snaps.settle() == 0 and len(topic.sent) == 1  # abandoned
        health = snaps.health()
        assert (health["state_snapshot_rounds"], health["state_snapshot_rounds_abandoned"],
                health["state_snapshot_rounds_failed"]) == (1.0, 1.0, 0.0)

    run(main())
