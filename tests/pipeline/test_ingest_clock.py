"""The ingest window on event time: far-future and far-past records are ``clock`` dead letters."""

import msgspec
import pytest

from tests.pipeline.consistency.helpers import FakeJob
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.ingest import Ingestor, RawMessage, TimeWindow
from trainguard.schemas.codec import encode
from trainguard.schemas.records import Record
from trainguard.schemas.topics import Topics

TOPICS = Topics("t")
WALL = 1_800_000_000.0
YEAR_2096 = 4_000_000_000.0


def _msg(record: Record, ts: float | None = WALL, offset: int = 0) -> RawMessage:
    topic = TOPICS.samples if record.__class__.__name__ == "GpuSampleBatch" else TOPICS.steps
    return RawMessage(topic, 0, offset, b"k", encode(record), timestamp=ts)


def _ingestor(**window: float) -> Ingestor:
    return Ingestor(TOPICS, window=TimeWindow(**window), clock=lambda: WALL)


def test_a_record_from_2096_is_a_clock_dead_letter_naming_its_ts():
    (batch,) = FakeJob(8, job_id="evil").samples(YEAR_2096, nodes=["node-00"])
    ingestor = _ingestor()
    result = ingestor.ingest([_msg(batch)])
    assert result.decoded == [] and [d.reason for d in result.dead] == ["clock"]
    assert "4000000000.0" in result.dead[0].message and "ahead of" in result.dead[0].message
    assert dict(ingestor.rejected) == {"clock": 1}


@pytest.mark.parametrize("ts", [1e308, WALL + 601, WALL - 7 * 86400 - 1])
def test_records_outside_the_window_around_their_kafka_timestamp_are_dead(ts):
    (batch,) = FakeJob(8).samples(ts, nodes=["node-00"])
    assert [d.reason for d in _ingestor().ingest([_msg(batch)]).dead] == ["clock"]


@pytest.mark.parametrize("ts", [WALL + 599, WALL - 6 * 86400, WALL])
def test_records_inside_the_window_are_accepted_with_their_kafka_timestamp(ts):
    (batch,) = FakeJob(8).samples(ts, nodes=["node-00"])
    result = _ingestor().ingest([_msg(batch)])
    assert result.dead == [] and result.decoded == [batch] and result.broker_ts == [WALL]


def test_the_window_is_relative_to_the_kafka_timestamp_so_simulated_time_can_pass():
    (batch,) = FakeJob(8).samples(WALL + 3e6, nodes=["node-00"])
    assert _ingestor().ingest([_msg(batch)]).dead[0].reason == "clock"
    wide = _ingestor(max_future_s=4e6)
    assert wide.ingest([_msg(batch)]).decoded == [batch]


def test_a_forged_kafka_timestamp_ahead_of_the_worker_clock_is_dead_too():
    (batch,) = FakeJob(8).samples(YEAR_2096, nodes=["node-00"])
    (dead,) = _ingestor().ingest([_msg(batch, ts=YEAR_2096)]).dead
    assert dead.reason == "clock" and "Kafka timestamp" in dead.message


def test_without_a_kafka_timestamp_the_wall_clock_is_the_reference():
    job = FakeJob(8)
    ok, bad = job.samples(WALL + 10, nodes=["node-00"]) + job.samples(WALL + 700, nodes=["node-00"])
    result = _ingestor().ingest([_msg(ok, ts=None), _msg(bad, ts=None, offset=1)])
    assert result.decoded == [ok] and [d.source.offset for d in result.dead] == [1]


def test_one_step_of_a_batch_far_in_the_future_makes_the_whole_batch_dead():
    (batch,) = FakeJob(4, gpus=4).step(7, WALL)
    steps = [*batch.steps[:-1], msgspec.structs.replace(batch.steps[-1], ts=YEAR_2096)]
    poisoned = msgspec.structs.replace(batch, steps=steps)
    assert [d.reason for d in _ingestor().ingest([_msg(poisoned)]).dead] == ["clock"]


def test_a_rank_event_of_a_batch_far_in_the_future_makes_the_whole_batch_dead():
    from trainguard.schemas.ranks import RankEvent

    (batch,) = FakeJob(4, gpus=4).step(7, WALL)
    poisoned = msgspec.structs.replace(batch, events=[
        RankEvent(rank=1, ts=YEAR_2096, event="stopped", pid=7)])
    assert [d.reason for d in _ingestor().ingest([_msg(poisoned)]).dead] == ["clock"]
    fine = msgspec.structs.replace(batch, events=[RankEvent(rank=1, ts=WALL, event="stopped")])
    assert _ingestor().ingest([_msg(fine)]).dead == []


def test_the_2096_record_leaves_every_other_jobs_state_untouched():
    good = FakeJob(16, job_id="good", seed=1)
    stage, ingestor = ConsistencyStage(clock=lambda: WALL), _ingestor()
    for s in range(1, 6):
        result = ingestor.ingest([_msg(b, WALL + s) for b in good.step(s, WALL + s)])
        stage.observe(result.decoded, result.broker_ts)
    before = (stage.jobs["good"].asm.watermark, stage.jobs["good"].asm.open_steps,
              stage.job_now("good"))
    evil = FakeJob(16, job_id="evil")
    result = ingestor.ingest([_msg(b, WALL + 6) for b in evil.step(1, YEAR_2096)])
    assert {d.reason for d in result.dead} == {"clock"} and result.decoded == []
    assert stage.observe(result.decoded, result.broker_ts) == []
    assert set(stage.jobs) == {"good"}
    after = (stage.jobs["good"].asm.watermark, stage.jobs["good"].asm.open_steps,
             stage.job_now("good"))
    assert after == before
