"""BatchHandler: the order of publish, store write, offset release and snapshot per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.pipeline.alerts.test_lifecycle import finding
from tests.pipeline.fakes import FakeEvent, FakeTopic, anomaly, events, faust_acks, raw, run, spin
from tests.pipeline.test_ingest import TOPICS, _batch
from trainguard.pipeline.batches import BatchHandler
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.publish import Publisher
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Finding


class Writes:
    """A store whose writes finish when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[Mapping[str, Sequence[Any]], Any]] = []
        self.futures: list[asyncio.Future[int]] = []

    def __call__(self, rows: Mapping[str, Sequence[Any]], lines: Any,
                 sources: Any = None) -> asyncio.Future[int]:
        self.calls.append((rows, lines))
        self.sources = sources
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
    ingestor = kw.pop("ingestor", None) or Ingestor(TOPICS)
    return BatchHandler(ingestor, topics.publisher(), write=writes, **kw), out


def _good(offsets: range) -> list[FakeEvent]:
    return events(TOPICS.samples, offsets, values=[encode(_batch()) for _ in offsets])


async def _handle(handler: BatchHandler, batch: list[FakeEvent]) -> None:
    await handler.handle(raw(batch), batch)
    faust_acks(batch)  # what take_events does after the body


def test_dead_letters_are_acked_by_kafka_before_the_store_write_starts() -> None:
    async def main() -> None:
        topics, writes = Topics(auto_ack=False), Writes()
        handler, _ = _handler(topics, writes)
        batch = events(TOPICS.samples, range(2), values=[b"nope", encode(_batch())])
        task = asyncio.create_task(handler.handle(raw(batch), batch))
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
        await spin()  # landed once its refused rows (none) are on the dead-letter topic
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
        self.after: list[list[Any]] = []
        self.settled = self.cancelled = 0

    async def wait_ready(self) -> None:
        return None

    def due(self) -> bool:
        return True

    async def start(self, after: Sequence[Any] = ()) -> None:
        self.in_flight_at_write.append(len(self.held))
        self.after.append(list(after))

    async def settle(self) -> int:
        self.settled += 1
        return 1

    def cancel(self) -> None:
        self.cancelled += 1


def test_anomalies_and_baselines_ride_with_the_batch_and_snapshot_follows_every_write() -> None:
    async def main() -> None:
        topics, writes = Topics(), Writes()
        held = HeldOffsets(lambda e: None)
        snaps = _Snapshots(held)
        handler, _ = _handler(topics, writes, offsets=held, baselines=_Baselines(),
                              snapshots=snaps)
        task = asyncio.create_task(_handle(handler, _good(range(0, 1))))
        await spin()
        # The round's copies are taken at once; it is sent after the write in flight lands,
        # and the handler does not wait for either.
        assert task.done() and snaps.in_flight_at_write == [-1, 1]
        ((followed,),) = snaps.after  # the batch's write, still in flight
        assert not followed.done()
        writes.futures[0].set_result(1)
        await spin()
        assert followed.done()
        await task
        assert [s.key for s in topics.anomalies.sent] == [b"node-03/2"]
        rows = writes.calls[0][0]
        assert len(rows["anomalies"]) == 1 and rows["baselines"] == [{"baseline": 1}]

    run(main())


def test_a_handover_waits_for_the_snapshot_round_and_a_stop_abandons_it() -> None:
    async def main() -> None:
        held = HeldOffsets(lambda e: None)
        snaps = _Snapshots(held)
        handler, _ = _handler(Topics(), Writes(), offsets=held, snapshots=snaps)
        await handler.drain()  # partitions go: their next owners read this round
        assert (snaps.settled, snaps.cancelled) == (1, 0)
        await handler.stop()
        assert (snaps.settled, snaps.cancelled) == (1, 1)

    run(main())


class _Consistency:
    def __init__(self) -> None:
        self.pending = [finding()]

    def observe(self, decoded: Sequence[Any], broker_ts: Sequence[Any] = ()) -> list[Any]:
        return []

    def flush(self, on_error: Any = None) -> list[Any]:
        out, self.pending = self.pending, []
        return out


class _FindingOnObserve(_Consistency):
    def observe(self, decoded: Sequence[Any], broker_ts: Sequence[Any] = (),
                sources: Sequence[Any] = ()) -> list[Any]:
        out, self.pending = self.pending, []
        return out


def test_a_batch_with_a_baselines_snapshot_still_stores_its_findings_and_dead_letters() -> None:
    # The snapshot's rows were once joined to a copy of the batch's rows before the
    # consistency findings were added: the findings reached the topic, not the table.
    async def main() -> None:
        topics, writes = Topics(), Writes()
        handler, _ = _handler(topics, writes, baselines=_Baselines(),
                              consistency=_FindingOnObserve())
        bad = events(TOPICS.samples, range(1, 2), values=[b"not json"])
        task = asyncio.create_task(_handle(handler, _good(range(0, 1)) + bad))
        await spin(20)
        assert task.done() or writes.futures, task
        writes.futures[0].set_result(1)
        await task
        assert [s.key for s in topics.findings.sent] == [b"job-1"]
        rows = writes.calls[0][0]
        assert rows["baselines"] == [{"baseline": 1}] and len(rows["findings"]) == 1
        assert len(rows["anomalies"]) == 1 and len(rows["dead_letters"]) == 1

    run(main())


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


# -- quarantine: a stage that raises costs only the records that trigger it ---------------


class _BaselinesFailingOn:
    """Baselines with a bug: raises on any call that includes the sample batch of ``node``."""

    def __init__(self, node: str) -> None:
        self.node, self.calls = node, 0

    def observe(self, decoded: Sequence[Any], sources: Sequence[str]) -> list[Any]:
        self.calls += 1
        if any(getattr(r, "node", None) == self.node for r in decoded):
            raise ZeroDivisionError(f"bug on {self.node}")
        return [anomaly(entity=f"{r.node}/0", node=r.node) for r in decoded]

    def snapshot_due(self) -> bool:
        return False


def test_a_baselines_bug_on_one_record_dead_letters_it_and_the_others_still_yield() -> None:
    async def main() -> None:
        topics, writes = Topics(), Writes()
        stage = _BaselinesFailingOn("n-bad")
        handler, _ = _handler(topics, writes, baselines=stage)
        nodes = [f"n{i}" for i in range(7)]
        nodes.insert(5, "n-bad")
        values = [encode(_batch(node=n)) for n in nodes]
        task = asyncio.create_task(_handle(handler, events(TOPICS.samples, range(8),
                                                           values=values)))
        await spin()
        writes.futures[0].set_result(1)
        await task
        assert sorted(s.key for s in topics.anomalies.sent) == sorted(
            f"{n}/0".encode() for n in nodes if n != "n-bad")
        [dead] = topics.dead.sent
        headers = dict(dead.headers)
        assert dead.value == values[5] and headers["tg.error.reason"] == b"stage_error"
        assert headers["tg.source.offset"] == b"5"
        assert b"baselines" in headers["tg.error.message"]
        assert b"ZeroDivisionError" in headers["tg.error.message"]
        [row] = writes.calls[0][0]["dead_letters"]
        assert row["reason"] == "stage_error" and row["offset"] == 5
        assert handler.quarantine.errors == {"baselines": 1}
        assert handler.quarantine.health()["stage_errors_baselines"] == 1.0
        assert stage.calls < 8  # bisected, not one call per record

    run(main())


def _poisoned_check(monkeypatch: Any) -> None:
    """Make the param-divergence check raise on a step holding the checksum ``boom``."""
    from trainguard.pipeline.consistency import job as job_module

    real = job_module.param_divergence

    def check(cs: Any, cols: Any) -> Any:
        if any(r.param_checksum == "boom" for r in cs.records):
            raise RuntimeError("check bug")
        return real(cs, cols)

    monkeypatch.setattr(job_module, "param_divergence", check)


def test_a_consistency_bug_costs_the_record_that_triggers_it_and_not_other_jobs(
        monkeypatch: Any) -> None:
    from tests.pipeline.consistency.helpers import T0, FakeJob
    from trainguard.pipeline.consistency import ConsistencyStage

    _poisoned_check(monkeypatch)
    bad_job = FakeJob(4, gpus=2, job_id="job-a", noise=False)
    good_job = FakeJob(4, gpus=2, job_id="job-b", noise=False)
    records: list[Any] = []
    for s in range(1, 8):
        # Rank 3 (the second node's batch, the one that completes the step) is poisoned.
        records += bad_job.step(s, over={3: {"param_checksum": "boom"}} if s == 3 else None)
        records += good_job.step(s, over={2: {"param_checksum": "9f3a77aa"}} if s >= 4 else None)
    poisoned = [i for i, r in enumerate(records)
                if r.job_id == "job-a" and any(x.param_checksum == "boom" for x in r.steps)]
    with pytest.raises(RuntimeError):  # what the worker would die of without the quarantine
        ConsistencyStage().observe(records)

    async def main() -> tuple[BatchHandler, Topics]:
        topics, writes = Topics(), Writes()
        stage = ConsistencyStage()
        # The simulated job runs at T0, ahead of today: the ingest window follows it.
        ingestor = Ingestor(TOPICS, clock=lambda: T0 + 60)
        handler, _ = _handler(topics, writes, consistency=stage, ingestor=ingestor)
        values = [encode(r) for r in records]
        task = asyncio.create_task(_handle(handler, events(TOPICS.steps, range(len(values)),
                                                           values=values)))
        await spin()
        writes.futures[0].set_result(1)
        await task
        [dead] = topics.dead.sent
        assert [dead.value] == [values[i] for i in poisoned]
        headers = dict(dead.headers)
        assert headers["tg.error.reason"] == b"stage_error"
        assert b"consistency" in headers["tg.error.message"]
        assert b"RuntimeError: check bug" in headers["tg.error.message"]
        assert handler.quarantine.errors == {"consistency": 1}
        assert handler.quarantine.jobs_reset >= 1
        # The other job's real fault is still found, and the poisoned job goes on.
        found = [RecordDecoder(Finding).decode(s.value) for s in topics.findings.sent]
        assert {(f.job_id, f.check, tuple(f.ranks)) for f in found} == {
            ("job-b", "param_divergence", (2,))}
        later = [encode(r) for s in range(8, 12) for r in bad_job.step(s)]
        task = asyncio.create_task(_handle(handler, events(
            TOPICS.steps, range(len(values), len(values) + len(later)), values=later)))
        await spin()
        writes.futures[1].set_result(1)
        await task
        assert len(topics.dead.sent) == 1 and stage.jobs["job-a"].steps_closed > 0
        return handler, topics

    run(main())


def test_a_bug_closing_one_jobs_expired_steps_drops_that_job_and_closes_the_others(
        monkeypatch: Any) -> None:
    from tests.pipeline.consistency.helpers import T0, FakeJob
    from trainguard.pipeline.consistency import ConsistencyStage

    _poisoned_check(monkeypatch)
    stage = ConsistencyStage()
    a, b = FakeJob(4, gpus=2, job_id="job-a"), FakeJob(4, gpus=2, job_id="job-b")
    # Rank 0 never reports: both steps stay open until their wait expires.
    stage.observe(a.step(1, skip=[0], over={3: {"param_checksum": "boom"}}) + b.step(1, skip=[0]))
    assert stage.stats()["open_steps"] == 2
    errors: list[tuple[str, str]] = []
    stage.flush(T0 + 100, on_error=lambda job, exc: errors.append((job, str(exc))))
    assert errors == [("job-a", "check bug")]
    assert "job-a" not in stage.jobs and stage.jobs["job-b"].steps_closed == 1
    with pytest.raises(RuntimeError):  # without a handler the bug still surfaces
        stage.observe(a.step(2, skip=[0], over={3: {"param_checksum": "boom"}}))
        stage.flush(T0 + 200)


def test_close_steps_counts_a_job_dropped_by_a_failing_flush() -> None:
    class Failing:
        def flush(self, on_error: Any = None) -> list[Any]:
            on_error("job-z", ValueError("bad state"))
            return []

    async def main() -> None:
        topics, writes = Topics(), Writes()
        handler, _ = _handler(topics, writes, consistency=Failing())
        await handler.close_steps()
        assert writes.calls == [] and handler.quarantine.jobs_reset == 1
        assert handler.quarantine.errors == {"consistency_flush": 1}

    run(main())


def test_rows_the_store_refused_reach_the_dead_letter_topic_before_their_offsets_go() -> None:
    from trainguard.pipeline.dead_letters import DeadLetter
    from trainguard.pipeline.sinks.store_sink import WriteResult

    async def main() -> None:
        topics, writes = Topics(auto_ack=False), Writes()
        handler, out = _handler(topics, writes)
        batch = _good(range(0, 3))
        task = asyncio.create_task(_handle(handler, batch))
        await spin()
        source = writes.sources("sample_batches_in", 1)  # who made the second line
        assert source is not None and source.offset == 1
        writes.futures[0].set_result(
            WriteResult(written=2, dead=[DeadLetter(source, "store_rejected", "Code: 27.")]))
        await spin()
        assert [s.value for s in topics.dead.sent] == [batch[1].message.value]
        await handler.settle_idle()
        assert out == []  # the copy is not acknowledged yet
        topics.dead.ack_all()
        await spin()
        await handler.settle_idle()
        await task
        assert out == [0, 1, 2]

    run(main())
