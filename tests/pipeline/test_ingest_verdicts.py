"""Batch ingest gives every message the verdict of the one-record checks, hostile ones too.

``Ingestor.ingest`` parses a chunk of messages, then checks its records a group at a time
and falls back to the one-record checks only where a group check fails. The reference
here is the one-message-at-a-time loop ingest ran before (decode, caps, window, intake or
rows), built from the same public one-record checks; a seeded corpus of valid records and
mutations of them (bad names, duplicate keys, tags, versions, ranges, broken bytes) mixed
into batches of every size must get the same records, dead letters (reason and message)
and intake or row placement, in the same order.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from bench.loadgen import FleetLoad
from trainguard.agents.sim import JobSimulator, JobSpec
from trainguard.pipeline import ingest as ingest_module
from trainguard.pipeline.caps import IngestCaps
from trainguard.pipeline.ingest import Ingestor, RawMessage, TimeWindow
from trainguard.pipeline.sinks.intake import intake_item
from trainguard.pipeline.sinks.rows import rows_for
from trainguard.pipeline.sinks.times import STORE_TS_MAX, STORE_TS_MIN
from trainguard.pipeline.window import record_span
from trainguard.schemas.codec import RecordDecoder, RecordError, encode
from trainguard.schemas.records import (
    CheckpointEvent,
    GpuSampleBatch,
    Heartbeat,
    StepBatch,
    StepRecord,
    WitnessReport,
)
from trainguard.schemas.topics import Topics

TOPICS = Topics("verdicts")
WALL = 1_800_000_000.0

#: Replacements that break one check each (where the text occurs in a record).
_FAULTS = [
    ('"node":"', '"node":"bad name'), ('"node":"', '"node":"-x'), ('"job_id":"', '"job_id":"x;'),
    ('"cluster":"', '"cluster":"n\\u00e4me'), ('"node":"', '"node":"a","node":"b c","x":"'),
    ('"kind":"step_batch"', '"kind":"step"'), ('"kind":"gpu_sample_batch"', '"kind":"x"'),
    ('"schema_version":1', '"schema_version":2'), ('"index":1', '"index":0'),
    ('"index":0', '"index":256'), ('"world_size":', '"world_size":1,"w":'),
    ('"rank":', '"rank":-'), ('"ts":', '"ts":4000000000.0,"y":'), ('"ts":', '"ts":1.05e10,"y":'),
    ('"ts":', '"ts":-1,"y":'), ('"seq":', '"seq":"7","s":'), ('"steps":[', '"steps":[1,'),
    ('"gpus":[', '"gpus":null,"z":['),
]


def _topic(record: Any) -> str:
    if isinstance(record, GpuSampleBatch):
        return TOPICS.samples
    return TOPICS.heartbeats if isinstance(record, Heartbeat) else TOPICS.steps


def _valid() -> list[tuple[str, bytes]]:
    spec = JobSpec(nodes=2, gpus_per_node=4, checkpoint_every=4, checkpoint_pause_s=1,
                   warmup_steps=1)
    out = [(_topic(e.record), encode(e.record)) for e in JobSimulator(spec, seed=5).run(8)]
    load = FleetLoad(TOPICS, 24, nodes_per_job=8, gpus=4)
    out += [(t, v) for k in range(2) for t, _, v in load.tick(k, WALL - 2 + k)]
    beat = Heartbeat(cluster="c", node="n1", ts=WALL, seq=0, agent_id="a", agent_version="x",
                     uptime_s=1.0, backend="simulated", gpu_count=2)
    out += [(TOPICS.heartbeats, encode(beat)), (TOPICS.steps, encode(
        StepRecord(job_id="j", rank=3, world_size=4, node="n1", step=5, ts=WALL))),
        (TOPICS.steps, encode(WitnessReport(cluster="c", node="n1", ts=WALL,
                                            subject="code", path="/code", digest="ab" * 32)))]
    return out


def _corpus(rng: random.Random) -> list[tuple[str, bytes | None]]:
    valid = _valid()
    out: list[tuple[str, bytes | None]] = list(valid)
    for topic, data in valid[::3]:
        text = data.decode()
        out += [(topic, text.replace(old, new, 1).encode())
                for old, new in _FAULTS if old in text]
        doc = json.loads(text)
        key = rng.choice(sorted(doc))
        doc[key] = rng.choice([None, -1, 2**64, "x", [], {}, 1e308])
        out.append((topic, json.dumps(doc).encode()))
        raw = bytearray(data)
        del raw[rng.randrange(len(raw)):][:rng.randint(1, 40)]
        out.append((topic, bytes(raw)))
    out += [(TOPICS.samples, None), (TOPICS.steps, b"\xff"), ("elsewhere", valid[0][1]),
            (TOPICS.heartbeats, valid[0][1])]
    rng.shuffle(out)
    return out


def _messages(rng: random.Random) -> list[RawMessage]:
    stamps = [WALL, WALL + 1.0, None, WALL + 3600.0, WALL - 8 * 86400.0]
    return [RawMessage(topic, rng.randint(0, 2), i, b"k", value,
                       rng.choice(stamps) if rng.random() < 0.2 else WALL)
            for i, (topic, value) in enumerate(_corpus(rng))]


def _reference(messages: list[RawMessage], caps: IngestCaps, window: TimeWindow,
               now: float) -> list[tuple[Any, ...]]:
    """Each message's verdict, one message at a time with the one-record checks."""
    decoders: dict[str, RecordDecoder[Any]] = {
        TOPICS.samples: RecordDecoder(GpuSampleBatch),
        TOPICS.steps: RecordDecoder(StepBatch | StepRecord | CheckpointEvent | WitnessReport),
        TOPICS.heartbeats: RecordDecoder(Heartbeat)}
    out: list[tuple[Any, ...]] = []
    for msg in messages:
        decoder = decoders.get(msg.topic)
        if decoder is None:
            out.append(("dead", "wrong_topic", f"no decoder for topic {msg.topic!r}"))
            continue
        try:
            record = decoder.decode(msg.value)
        except RecordError as exc:
            out.append(("dead", exc.reason, exc.message))
            continue
        broken = caps.check(record)
        first, last = record_span(record)
        why = window.why_not_span(first, last, msg.timestamp, now)
        if broken is not None or why is not None:
            out.append(("dead", *(broken or ("clock", why))))
            continue
        item = intake_item(record, msg.partition, msg.offset,
                           storable=STORE_TS_MIN <= first and last <= STORE_TS_MAX)
        placed = item[0] if item else sorted({t for t, _ in rows_for(record)})
        out.append(("ok", repr(record), placed))
    return out


def _verdicts(ingestor: Ingestor, batch: list[RawMessage]) -> list[tuple[Any, ...]]:
    result = ingestor.ingest(batch)
    by_offset: dict[int, tuple[Any, ...]] = {
        d.source.offset: ("dead", d.reason, d.message) for d in result.dead}
    assert [d.source.offset for d in result.dead] == sorted(by_offset)
    assert [m.offset for m in result.messages] == sorted(m.offset for m in result.messages)
    assert result.broker_ts == [m.timestamp for m in result.messages]
    assert result.sources == [f"{m.topic}:{m.partition}" for m in result.messages]
    lines = {id(item[0]): table for table, items in result.lines.items() for item in items}
    rows: dict[str, list[Any]] = {}
    for record, msg in zip(result.decoded, result.messages, strict=True):
        placed = lines.get(id(record))
        if placed is None:
            for table, row in rows_for(record, msg.partition, msg.offset):
                rows.setdefault(table, []).append(row)
            placed = sorted({t for t, _ in rows_for(record)})
        by_offset[msg.offset] = ("ok", repr(record), placed)
    assert rows == result.rows
    return [by_offset[m.offset] for m in batch]


@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("config", ["default", "tight"])
def test_batches_of_any_size_get_the_one_record_verdicts(
        monkeypatch: pytest.MonkeyPatch, chunk: int, config: str) -> None:
    rng = random.Random(f"{chunk}:{config}")
    messages = _messages(rng)
    caps, window = IngestCaps(), TimeWindow()
    if config == "tight":
        caps, window = IngestCaps(max_world_size=8), TimeWindow(max_future_s=60, max_past_s=600)
    monkeypatch.setattr(ingest_module, "_CHUNK", chunk)
    ingestor = Ingestor(TOPICS, caps, window=window, clock=lambda: WALL)
    expected = _reference(messages, caps, window, WALL)
    got: list[tuple[Any, ...]] = []
    at = 0
    while at < len(messages):
        size = rng.choice([1, 2, 7, 30, 200])
        got += _verdicts(ingestor, messages[at:at + size])
        at += size
    assert len(expected) > 300 and {v[1] for v in expected if v[0] == "dead"} >= {
        "invalid", "not_json", "wrong_kind", "unsupported_version", "clock", "wrong_topic"}
    assert got == expected
    assert ingestor.accepted == sum(v[0] == "ok" for v in expected)


def test_a_fault_in_one_record_of_a_clean_batch_refuses_only_that_record() -> None:
    load = FleetLoad(TOPICS, 40, nodes_per_job=8, gpus=4)
    batch = [RawMessage(t, 0, i, b"k", v, WALL)
             for i, (t, _, v) in enumerate(load.tick(0, WALL))]
    bad = batch[41]
    assert bad.value is not None
    batch[41] = RawMessage(bad.topic, 0, 41, b"k", bad.value.replace(b'"node":"', b'"node":"-', 1),
                           WALL)
    result = Ingestor(TOPICS, clock=lambda: WALL).ingest(batch)
    assert [(d.source.offset, d.reason) for d in result.dead] == [(41, "invalid")]
    assert result.records == len(batch) - 1
    assert sum(map(len, result.lines.values())) == len(batch) - 1
