"""HeldOffsets: a message's offset goes only after the work that holds it landed, in order."""

from __future__ import annotations

import asyncio

import pytest

from tests.pipeline.fakes import FakeEvent, events, faust_acks, run, spin
from trainguard.errors import TrainguardError
from trainguard.pipeline.offsets import HeldOffsets, landed


def _held() -> tuple[HeldOffsets, list[int]]:
    out: list[int] = []
    return HeldOffsets(lambda e: out.append(e.message.offset)), out


def _batch(offsets: range, held: HeldOffsets) -> list[FakeEvent]:
    batch = events("in", offsets)
    held.hold(batch)
    faust_acks(batch)  # take_events acks when the agent body returns: must not release
    return batch


def test_offsets_are_released_only_after_the_write_landed() -> None:
    async def main() -> None:
        held, out = _held()
        write: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        batch = _batch(range(3), held)
        held.add(write, batch)
        await held.settle_done()
        assert out == [] and not any(e.message.acked for e in batch)
        write.set_result(3)
        await held.settle_done()
        assert out == [0, 1, 2] and len(held) == 0

    run(main())


def test_a_later_write_landing_first_waits_for_the_earlier_one() -> None:
    async def main() -> None:
        held, out = _held()
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        held.add(first, _batch(range(0, 2), held))
        held.add(second, _batch(range(2, 4), held))
        second.set_result(2)
        await held.settle_done()
        assert out == []
        first.set_result(2)
        await held.settle_done()
        assert out == [0, 1, 2, 3]

    run(main())


def test_a_failed_write_raises_and_acks_nothing() -> None:
    async def main() -> None:
        held, out = _held()
        write: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        batch = _batch(range(2), held)
        held.add(write, batch)
        write.set_exception(TrainguardError("store gave up"))
        with pytest.raises(TrainguardError):
            await held.settle_done()
        assert out == [] and not any(e.message.acked for e in batch)

    run(main())


def test_settle_waits_while_the_limit_of_writes_is_in_flight() -> None:
    async def main() -> None:
        held, out = _held()
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        held.add(first, _batch(range(1), held))
        await held.settle(2)  # one in flight, under the limit: returns at once
        held.add(second, _batch(range(1, 2), held))
        task = asyncio.create_task(held.settle(2))
        await spin()
        assert not task.done() and out == []  # two in flight: waits for the oldest
        first.set_result(1)
        await task
        assert out == [0] and len(held) == 1

    run(main())


def test_on_stop_only_landed_writes_are_released() -> None:
    async def main() -> None:
        held, out = _held()
        loop = asyncio.get_running_loop()
        done, failed, pending = loop.create_future(), loop.create_future(), loop.create_future()
        held.add(done, _batch(range(0, 1), held))
        held.add(failed, _batch(range(1, 2), held))
        held.add(pending, _batch(range(2, 3), held))
        done.set_result(1)
        failed.set_exception(TrainguardError("down"))
        await held.settle_landed()
        assert out == [0] and len(held) == 2
        pending.cancel()

    run(main())


def test_settle_all_waits_for_every_write() -> None:
    async def main() -> None:
        held, out = _held()
        loop = asyncio.get_running_loop()
        writes = [loop.create_future() for _ in range(3)]
        for i, w in enumerate(writes):
            held.add(w, _batch(range(i, i + 1), held))
        task = asyncio.create_task(held.settle_all())
        for w in reversed(writes):
            w.set_result(1)
        await task
        assert out == [0, 1, 2]

    run(main())


def test_release_when_acks_on_completion_but_not_on_cancel() -> None:
    async def main() -> None:
        held, out = _held()
        loop = asyncio.get_running_loop()
        delivered, cancelled = loop.create_future(), loop.create_future()
        held.release_when(delivered, _batch(range(0, 2), held))
        held.release_when(cancelled, _batch(range(2, 4), held))
        await spin()
        assert out == []
        delivered.set_result(None)
        cancelled.cancel()
        await spin()
        assert out == [0, 1]

    run(main())


def test_landed_is_true_only_for_a_successful_result() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ok, bad, running = loop.create_future(), loop.create_future(), loop.create_future()
        ok.set_result(1)
        bad.set_exception(TrainguardError("x"))
        assert landed(ok) and not landed(bad) and not landed(running)
        bad.exception()
        running.cancel()

    run(main())
