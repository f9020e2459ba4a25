"""RawConsumer: getmany batches to the handler; offsets committed only once a batch landed."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Any

from tests.pipeline.fakes import run, spin
from tests.pipeline.test_batches import Topics, Writes, _good
from tests.pipeline.test_ingest import TOPICS
from trainguard.pipeline.batches import BatchHandler
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.raw_consumer import (
    CommitLedger,
    OffsetMark,
    RawConsumer,
    raw_group,
    raw_messages,
)

TP = namedtuple("TP", "topic partition")


@dataclass
class Record:
    """An aiokafka ConsumerRecord's fields the consumer reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None  # none: the ingest window uses the wall clock
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeConsumer:
    """getmany serves the queued batches; commit records what it was given."""

    def __init__(self, batches: list[dict[TP, list[Record]]], assigned: set[TP]) -> None:
        self.batches, self.assigned = list(batches), set(assigned)
        self.commits: list[dict[TP, int]] = []
        self.fail_commits = False

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        await asyncio.sleep(0)
        return self.batches.pop(0) if self.batches else {}

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TP, int]) -> None:
        if self.fail_commits:
            raise RuntimeError("CommitFailedError: the group rebalanced")
        self.commits.append(dict(offsets))


def _records(offsets: range, partition: int = 0) -> list[Record]:
    """Valid sample batches of one partition, as the broker would hand them over."""
    return [Record(TOPICS.samples, partition, e.message.offset, b"k", e.message.value)
            for e in _good(offsets)]


def _consumer(batches: list[dict[TP, list[Record]]], assigned: set[TP], linger_s: float = 0.0,
              max_records: int = 100) -> tuple[RawConsumer, FakeConsumer, Writes, CommitLedger]:
    writes, ledger = Writes(), CommitLedger()
    handler = BatchHandler(Ingestor(TOPICS), Topics().publisher(), HeldOffsets(ledger.released),
                           writes, writes_in_flight=3)
    fake = FakeConsumer(batches, assigned)
    return RawConsumer(fake, handler, ledger, max_records=max_records, timeout_s=0.01,
                       linger_s=linger_s, commit_every_s=0.0), fake, writes, ledger


def test_raw_messages_are_plain_copies_with_seconds_and_the_next_offsets():
    p0, p1 = TP("s", 0), TP("s", 1)
    batch = {p0: [Record("s", 0, 7, b"a", b"x", 1_500, [("tg.mac", b"m")]),
                  Record("s", 0, 8, None, b"y", -1)],
             p1: [Record("s", 1, 3, b"b", b"z", None)], TP("s", 2): []}
    messages, mark = raw_messages(batch)
    assert [(m.partition, m.offset, m.timestamp) for m in messages] == [
        (0, 7, 1.5), (0, 8, None), (1, 3, None)]  # -1 / None: no Kafka timestamp
    assert messages[0].headers == (("tg.mac", b"m"),) and messages[1].key is None
    assert mark.offsets == {p0: 9, p1: 4}  # the next offset to read, per partition
    assert mark.message is mark and mark.ack()  # held like a Faust event, one reference


def test_offsets_are_committed_only_after_the_batch_landed_in_the_store():
    async def main() -> None:
        tp = TP(TOPICS.samples, 0)
        raw, fake, writes, _ = _consumer([{tp: _records(range(0, 3))}], {tp})
        assert await raw.poll_once() == 3
        assert fake.commits == [] and len(writes.calls) == 1  # written, not landed
        writes.futures[0].set_result(1)
        await spin()
        await raw._sink.settle_idle()  # what the worker's 0.5 s timer does
        await raw.poll_once()  # an empty poll: the commit is due
        assert fake.commits == [{tp: 3}]
        assert raw.batches == 1 and raw.messages == 3

    run(main())


def test_a_revocation_lands_the_writes_in_flight_and_commits_only_the_revoked_partitions():
    async def main() -> None:
        a, b = TP(TOPICS.samples, 0), TP(TOPICS.samples, 1)
        raw, fake, writes, ledger = _consumer(
            [{a: _records(range(0, 2))}, {b: _records(range(0, 2), partition=1)}], {a, b})
        raw._next_commit = float("inf")
        await raw.poll_once()
        await raw.poll_once()  # two writes in flight
        assert fake.commits == []
        revoking = asyncio.create_task(raw.on_revoked({a}))
        await spin()
        assert not revoking.done()  # waits for the writes in flight
        for f in writes.futures:
            f.set_result(1)
        await revoking
        assert fake.commits == [{a: 2}]  # b's offset is dropped: its new owner re-reads
        assert ledger.take() == {}

    run(main())


def test_a_refused_commit_is_counted_and_the_consumer_goes_on():
    async def main() -> None:
        tp = TP(TOPICS.samples, 0)
        raw, fake, _, ledger = _consumer([], {tp})
        fake.fail_commits = True
        ledger.released(OffsetMark({tp: 5}))
        await raw.commit()
        assert ledger.failed == 1 and ledger.commits == 0 and fake.commits == []
        fake.fail_commits = False
        ledger.released(OffsetMark({tp: 9}))
        await raw.commit()
        assert fake.commits == [{tp: 9}] and ledger.commits == 1

    run(main())


def test_the_ledger_keeps_the_highest_offset_and_only_of_partitions_still_held():
    ledger = CommitLedger()
    a, b = TP("s", 0), TP("s", 1)
    ledger.released(OffsetMark({a: 10, b: 4}))
    ledger.released(OffsetMark({a: 7}))  # an older mark cannot move a partition back
    assert ledger.take([a]) == {a: 10}
    assert ledger.take() == {}


def test_run_releases_what_landed_and_commits_on_the_way_out():
    async def main() -> None:
        tp = TP(TOPICS.samples, 0)
        raw, fake, writes, _ = _consumer([{tp: _records(range(0, 4))},
                                          {tp: _records(range(4, 6))}], {tp})
        raw._commit_every_s = 3600.0  # only the way out commits
        raw._next_commit = float("inf")
        await raw.poll_once()
        await raw.poll_once()
        writes.futures[0].set_result(1)  # the second write never lands
        await spin()
        await raw.run(should_stop=lambda: True)
        assert fake.commits == [{tp: 4}]

    run(main())


def test_the_raw_group_is_the_app_id_with_a_suffix():
    assert raw_group("tg-worker") == "tg-worker-raw"


def test_a_lingering_batch_collects_what_arrives_after_its_first_messages():
    async def main() -> None:
        a, b = TP(TOPICS.samples, 0), TP(TOPICS.samples, 1)
        polls = [{a: _records(range(0, 2))}, {b: _records(range(0, 3), partition=1)},
                 {a: _records(range(2, 4))}]
        raw, fake, writes, ledger = _consumer(list(polls), {a, b}, linger_s=5.0)
        assert await raw.poll_once() == 7  # three polls, one batch (and one write)
        assert len(writes.calls) == 1 and raw.batches == 1 and fake.batches == []
        # Each partition's messages stay in offset order; the mark is past the last.
        writes.futures[0].set_result(1)
        await spin()
        await raw._sink.settle_idle()
        await raw.poll_once()
        assert fake.commits == [{a: 4, b: 3}]

        # Without lingering, a poll is a batch.
        raw, fake, writes, _ = _consumer(list(polls), {a, b})
        assert await raw.poll_once() == 2
        assert len(writes.calls) == 1 and len(fake.batches) == 2

    run(main())


def test_a_lingering_batch_stops_at_batch_max_and_leaves_the_rest_for_the_next():
    async def main() -> None:
        a = TP(TOPICS.samples, 0)
        polls = [{a: _records(range(0, 3))}, {a: _records(range(3, 6))},
                 {a: _records(range(6, 9))}]
        raw, fake, writes, _ = _consumer(polls, {a}, linger_s=5.0, max_records=5)
        assert await raw.poll_once() == 6  # 3 + 3: the cap was reached, no third poll
        assert fake.batches == [{a: _records(range(6, 9))}]
        assert await raw.poll_once() == 3

    run(main())
