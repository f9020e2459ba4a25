import time

import msgspec

from trainguard.agents.collectors import SimulatedGpus
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.schemas.codec import encode
from trainguard.schemas.records import GpuSampleBatch, Heartbeat, StepBatch, StepRecord
from trainguard.schemas.topics import Topics

TOPICS = Topics("t")
NOW = time.time()


def _batch(node="n1", gpus=2):
    return GpuSampleBatch(
        cluster="c",
        node=node,
        ts=NOW,
        seq=1,
        agent_id="a",
        gpus=SimulatedGpus(node, gpus).collect(NOW),
    )


def _msg(topic, value, offset=0):
    return RawMessage(topic=topic, partition=0, offset=offset, key=b"k", value=value, timestamp=NOW)


def test_a_valid_sample_batch_becomes_one_intake_item_with_its_kafka_coordinates():
    result = Ingestor(TOPICS).ingest([_msg(TOPICS.samples, encode(_batch(gpus=3)), offset=42)])
    assert result.records == 1 and not result.dead and not result.rows
    ((record, partition, offset),) = result.lines["sample_batches_in"]
    assert (partition, offset) == (0, 42) and record is result.decoded[0]
    assert record.node == "n1" and len(record.gpus) == 3


def test_intake_items_hold_the_decoded_record_without_the_senders_unknown_fields():
    raw = encode(_batch()).replace(b'{"kind"', b'{"_tg_offset":7, "extra":[1], "kind"', 1)
    result = Ingestor(TOPICS).ingest([_msg(TOPICS.samples, raw, offset=3)])
    ((record, _, offset),) = result.lines["sample_batches_in"]
    assert offset == 3 and isinstance(record, GpuSampleBatch)
    assert "extra" not in msgspec.json.decode(msgspec.json.encode(record))


def test_steps_and_heartbeats_land_in_their_tables():
    step = StepRecord(job_id="j", rank=0, world_size=2, node="n1", step=5, ts=NOW, loss=1.0)
    steps = StepBatch(
        cluster="c",
        node="n1",
        job_id="j",
        ts=NOW,
        seq=0,
        agent_id="a",
        steps=[step, msgspec.structs.replace(step, rank=1)],
    )
    hb = Heartbeat(
        cluster="c",
        node="n1",
        ts=NOW,
        seq=0,
        agent_id="a",
        agent_version="x",
        uptime_s=1.0,
        backend="simulated",
        gpu_count=2,
    )
    result = Ingestor(TOPICS).ingest(
        [_msg(TOPICS.steps, encode(steps)), _msg(TOPICS.heartbeats, encode(hb))]
    )
    ((record, _, _),) = result.lines["step_batches_in"]
    assert [s.rank for s in record.steps] == [0, 1]
    assert result.rows["agent_heartbeats"][0]["gpu_count"] == 2


def test_a_lone_step_record_is_flattened_into_a_steps_row():
    step = StepRecord(job_id="j", rank=3, world_size=4, node="n1", step=5, ts=NOW, loss=1.0)
    result = Ingestor(TOPICS).ingest([_msg(TOPICS.steps, encode(step))])
    assert [r["rank"] for r in result.rows["steps"]] == [3] and not result.lines


def test_garbage_goes_to_dead_letters_with_reason_and_valid_records_still_land():
    ingestor = Ingestor(TOPICS)
    result = ingestor.ingest(
        [
            _msg(TOPICS.samples, b"\x00garbage", offset=1),
            _msg(TOPICS.samples, encode(_batch()), offset=2),
            _msg(TOPICS.samples, b'{"kind":"gpu_sample_batch"}', offset=3),
            _msg(TOPICS.heartbeats, encode(_batch()), offset=4),
        ]
    )
    assert [d.reason for d in result.dead] == ["not_json", "invalid", "wrong_kind"]
    assert [d.source.offset for d in result.dead] == [1, 3, 4]
    assert len(result.lines["sample_batches_in"]) == 1
    assert dict(ingestor.rejected) == {"not_json": 1, "invalid": 1, "wrong_kind": 1}
    assert ingestor.accepted == 1


def test_dead_letter_keeps_source_coordinates_in_headers_and_row():
    dead = Ingestor(TOPICS).ingest([_msg(TOPICS.samples, b"nope", offset=9)]).dead[0]
    headers = dict(dead.headers("w1"))
    assert headers["tg.error.reason"] == b"not_json"
    assert headers["tg.source.topic"] == TOPICS.samples.encode()
    assert headers["tg.source.offset"] == b"9"
    row = dead.row()
    assert row["payload_head"] == "nope" and row["payload_size"] == 4 and row["offset"] == 9


def test_message_from_an_unknown_topic_is_rejected_not_dropped():
    result = Ingestor(TOPICS).ingest([_msg("elsewhere", encode(_batch()))])
    assert [d.reason for d in result.dead] == ["wrong_topic"]


def test_a_witness_report_on_the_steps_topic_lands_in_the_witness_table():
    from trainguard.schemas.records import WitnessReport

    report = WitnessReport(cluster="c", node="n1", ts=NOW, subject="framework",
                           path="/venv/torch", digest="ab" * 32, size=10, files=2,
                           changed_files=["nn/functional.py"], changed_count=1, job_id="j")
    result = Ingestor(TOPICS).ingest([_msg(TOPICS.steps, encode(report))])
    assert result.decoded == [report] and not result.dead
    (row,) = result.rows["witness"]
    assert row["path"] == "/venv/torch" and row["changed_files"] == ["nn/functional.py"]
    assert row["job_id"] == "j" and row["digest"] == "ab" * 32 and row["changed_at"] is None
