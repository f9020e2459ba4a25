"""StoreSink on the real embedded engine: nothing refused silently, nothing genuine lost."""

from __future__ import annotations

import math
import time

import pytest

from trainguard.pipeline.dead_letters import RawMessage
from trainguard.pipeline.ingest import Ingestor, TimeWindow
from trainguard.pipeline.sinks.intake import intake_item
from trainguard.pipeline.sinks.rows import rows_for
from trainguard.pipeline.sinks.sources import IngestSources
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store import ChdbStore, migrate
from trainguard.schemas.codec import encode
from trainguard.schemas.records import StepBatch, StepRecord
from trainguard.schemas.topics import Topics

NOW = time.time()
MONTH = 32 * 86400.0
TOPICS = Topics("t")
#: Times are the store's guard to check here, not the ingest window's (which comes first).
NO_WINDOW = TimeWindow(max_future_s=math.inf, max_past_s=math.inf)


@pytest.fixture
def store(chdb_store: ChdbStore) -> ChdbStore:
    migrate(chdb_store)
    return chdb_store


def _step(step: int, ts: float, job: str = "j") -> StepRecord:
    return StepRecord(job_id=job, rank=0, world_size=1, node="n", step=step, ts=ts, loss=1.0)


def _batch(steps: list[StepRecord], job: str = "j") -> StepBatch:
    return StepBatch(cluster="c", node="n", job_id=job, ts=steps[0].ts, seq=1, agent_id="a",
                     steps=steps)


def _message(record: StepBatch, offset: int) -> RawMessage:
    return RawMessage(topic=TOPICS.steps, partition=0, offset=offset, key=b"j",
                      value=encode(record), timestamp=NOW)


def _lines(messages: list[tuple[RawMessage, StepBatch]]) -> tuple[list, object]:
    """Intake items of step batches (as ingest makes them) and who made each."""
    lines = []
    for msg, record in messages:
        made = intake_item(record, msg.partition, msg.offset)
        assert made is not None
        lines.append(made[1])

    def source_of(table: str, index: int) -> RawMessage | None:
        return messages[index][0] if table == "step_batches_in" else None

    return lines, source_of


def _count(store: ChdbStore, table: str, where: str = "1") -> int:
    return int(store.query(f"SELECT count() FROM {{database}}.{table} WHERE {where}").scalar())


def test_a_batch_spanning_101_months_lands_whole(store: ChdbStore) -> None:
    # One store write of 101 step batches, each in its own month: ClickHouse refuses a
    # block over 100 partitions; the engine used to drop the whole block without a word.
    base = NOW - 101 * MONTH
    messages = [(_message(b, i), b) for i, b in
                enumerate(_batch([_step(i, base + i * MONTH)]) for i in range(101))]
    lines, source_of = _lines(messages)
    result = StoreSink(store).write({}, {"step_batches_in": lines}, source_of)
    assert result.dead == [] and result.written == 101
    assert _count(store, "steps") == 101


def test_a_message_the_store_refuses_is_dead_lettered_and_its_neighbours_land(
        store: ChdbStore) -> None:
    base = NOW - 101 * MONTH
    # Poison: one message whose steps alone span 101 months (no split can store it).
    poison = _batch([_step(1000 + i, base + i * MONTH, job="evil") for i in range(101)],
                    job="evil")
    records = [_batch([_step(i, NOW - i)]) for i in range(7)]
    records.insert(4, poison)
    messages = [(_message(r, i), r) for i, r in enumerate(records)]
    lines, source_of = _lines(messages)
    sink = StoreSink(store)
    result = sink.write({}, {"step_batches_in": lines}, source_of)
    assert _count(store, "steps", "job_id = 'j'") == 7
    assert _count(store, "steps", "job_id = 'evil'") == 0
    [dead] = result.dead
    assert dead.reason == "store_rejected" and "Too many partitions" in dead.message
    assert dead.source is messages[4][0]
    row = store.query("SELECT topic, offset, reason, payload_size FROM {database}.dead_letters"
                      ).dicts()
    assert row == [{"topic": TOPICS.steps, "offset": 4, "reason": "store_rejected",
                    "payload_size": len(messages[4][0].value or b"")}]
    assert sink.counters.rejected == {"store_rejected": 1} and sink.counters.lines == 7


def test_a_row_the_store_cannot_parse_is_dead_lettered_and_the_rest_land(
        store: ChdbStore) -> None:
    rows = [row for i in range(5) for _, row in rows_for(_step(i, NOW - i))]
    rows[2] = {**rows[2], "world_size": "not a number"}
    result = StoreSink(store).write({"steps": rows})
    assert _count(store, "steps") == 4 and _count(store, "steps", "step = 2") == 0
    [dead] = result.dead
    assert dead.reason == "store_rejected" and dead.source.topic == "store.steps"


def test_out_of_range_times_are_clock_dead_letters_and_never_stored(store: ChdbStore) -> None:
    far = _batch([_step(1, NOW, "k"), _step(2, 1e308, "k"), _step(3, NOW, "k")], job="k")
    msgs = [RawMessage(topic=TOPICS.steps, partition=1, offset=9, key=b"k", value=encode(far),
                       timestamp=NOW)]
    result = Ingestor(TOPICS, window=NO_WINDOW).ingest(msgs)
    assert "step_batches_in" not in result.lines  # no intake item for it: the row path
    sink = StoreSink(store)
    written = sink.write(result.rows, result.lines, IngestSources(msgs, result))
    assert _count(store, "steps", "job_id = 'k'") == 2
    assert _count(store, "steps", "step = 2") == 0
    assert _count(store, "steps", "ts > '2200-01-01'") == 0
    [dead] = written.dead
    assert dead.reason == "clock" and dead.source is msgs[0]
    assert "steps.ts=1e+308" in dead.message
    assert _count(store, "dead_letters", "reason = 'clock' AND offset = 9") == 1


def test_witness_reports_and_what_they_add_to_checkpoints_and_heartbeats_land(
        store: ChdbStore) -> None:
    from trainguard.schemas.records import (
        AgentCounters,
        CheckpointEvent,
        Heartbeat,
        WitnessReport,
    )

    records = [
        WitnessReport(cluster="c", node="n", ts=NOW, subject="checkpoint", path="/ckpt/r0.pt",
                      digest="ab" * 32, size=7, changed_at=NOW - 1, job_id="j"),
        WitnessReport(cluster="c", node="n", ts=NOW, subject="framework", path="/venv/torch",
                      digest="cd" * 32, size=70, files=3, changed_files=["nn/functional.py"],
                      changed_count=1),
        CheckpointEvent(cluster="c", job_id="j", node="n", rank=0, step=1, ts=NOW,
                        action="save", checkpoint_id="c/1", digest="ab" * 32,
                        path="/ckpt/r0.pt"),
        Heartbeat(cluster="c", node="n", ts=NOW, seq=0, agent_id="a", agent_version="1",
                  uptime_s=1.0, backend="nvml", gpu_count=8,
                  counters=AgentCounters(witness_hashed=5, witness_skipped=2)),
    ]
    messages = [RawMessage(topic=TOPICS.heartbeats if isinstance(r, Heartbeat) else TOPICS.steps,
                           partition=0, offset=i, key=b"j", value=encode(r), timestamp=NOW)
                for i, r in enumerate(records)]
    ingested = Ingestor(TOPICS).ingest(messages)
    assert ingested.dead == []
    result = StoreSink(store).write(ingested.rows, ingested.lines, lambda t, i: None)
    assert result.dead == []
    assert store.query("SELECT subject, changed_files FROM {database}.witness ORDER BY subject"
                       ).rows == [("checkpoint", []), ("framework", ["nn/functional.py"])]
    assert store.query("SELECT path FROM {database}.checkpoints").scalar() == "/ckpt/r0.pt"
    assert store.query("SELECT witness_hashed, witness_skipped FROM {database}.agent_heartbeats"
                       ).rows == [(5, 2)]


def _sharded_batch_with_events() -> StepBatch:
    from trainguard.schemas.ranks import EnvManifest, RankEvent

    step = StepRecord(job_id="j", rank=1, world_size=2, node="n", step=7, ts=NOW, loss=1.0,
                      shard=1, ep_rank=0, data_epoch=3, checksum_step=6)
    return StepBatch(cluster="c", node="n", job_id="j", ts=NOW, seq=1, agent_id="a",
                     steps=[step], events=[
                         RankEvent(rank=0, ts=NOW - 1, event="bye", reason="error", step=7,
                                   pid=41),
                         RankEvent(rank=0, ts=NOW, event="exited", pid=41, signal=9),
                         RankEvent(rank=1, ts=NOW, event="waiting", since=NOW - 5,
                                   collective=12, step=8)],
                     # Manifests are not stored: the intake must skip them whole.
                     manifests=[EnvManifest(rank=1, ts=NOW, fingerprint="ab" * 32,
                                            entries={"torch:nn/functional.py": "cd" * 32})])


def _stored_layout_and_events(store: ChdbStore) -> tuple[list[tuple], list[tuple]]:
    steps = store.query("SELECT shard, ep_rank, data_epoch, checksum_step FROM "
                        "{database}.steps").rows
    events = store.query(
        "SELECT rank, event, pid, exit_code, signal, reason, step, collective, "
        "since IS NULL FROM {database}.rank_events ORDER BY rank, ts").rows
    return steps, events


EXPECTED_EVENTS = [(0, "bye", 41, None, None, "error", 7, None, True),
                   (0, "exited", 41, None, 9, "", None, None, True),
                   (1, "waiting", None, None, None, "", 8, 12, False)]


def test_step_layout_columns_and_rank_events_land_through_the_intake(store: ChdbStore) -> None:
    batch = _sharded_batch_with_events()
    msgs = [RawMessage(topic=TOPICS.steps, partition=0, offset=1, key=b"j", value=encode(batch),
                       timestamp=NOW)]
    ingested = Ingestor(TOPICS).ingest(msgs)
    assert ingested.dead == [] and "step_batches_in" in ingested.lines
    result = StoreSink(store).write(ingested.rows, ingested.lines, IngestSources(msgs, ingested))
    assert result.dead == []
    steps, events = _stored_layout_and_events(store)
    assert steps == [(1, 0, 3, 6)] and events == EXPECTED_EVENTS


def test_step_layout_columns_and_rank_events_land_through_the_row_path(store: ChdbStore) -> None:
    rows: dict[str, list[dict]] = {}
    for table, row in rows_for(_sharded_batch_with_events()):
        rows.setdefault(table, []).append(row)
    assert StoreSink(store).write(rows).dead == []
    steps, events = _stored_layout_and_events(store)
    assert steps == [(1, 0, 3, 6)] and events == EXPECTED_EVENTS


def test_a_sample_batch_its_columns_cannot_hold_is_dead_lettered_and_the_rest_land(
        store: ChdbStore) -> None:
    from trainguard.schemas.records import GpuSample, GpuSampleBatch

    def sample(node: str, index: int) -> GpuSampleBatch:
        return GpuSampleBatch(cluster="c", node=node, ts=NOW, seq=1, agent_id="a",
                              gpus=[GpuSample(index=index, util_gpu_pct=50.0)])

    # index 300 cannot be a UInt8 gpu (the decoder bounds it; a record built in-process may not)
    records = [sample("n0", 0), sample("n1", 300), sample("n2", 1)]
    msgs = [RawMessage(topic=TOPICS.samples, partition=0, offset=i, key=None,
                       value=b"{}", timestamp=NOW) for i in range(3)]
    items = [(r, 0, i) for i, r in enumerate(records)]
    sink = StoreSink(store)
    result = sink.write({}, {"sample_batches_in": items},
                        lambda t, i: msgs[i] if t == "sample_batches_in" else None)
    [dead] = result.dead
    assert dead.source is msgs[1] and dead.reason == "store_rejected"
    assert _count(store, "gpu_samples") == 2 and _count(store, "sample_batches") == 2
    assert _count(store, "sample_batches", "node = 'n1'") == 0
    assert result.written == 2 and sink.counters.lines == 2


def test_column_rows_go_in_as_one_block_and_a_bad_time_is_a_dead_letter_naming_it(store):
    from trainguard.pipeline.baselines import _BASELINE_SCHEMA
    from trainguard.pipeline.sinks.column_rows import column_rows

    def rows(ts: list[float]) -> object:
        n = len(ts)
        return column_rows({"cluster": ["c"] * n, "entity_kind": ["gpu"] * n,
                            "entity": [f"n/{i}" for i in range(n)], "metric": ["power_w"] * n,
                            "ts": ts, "mean": [1.0] * n, "scale": [0.5] * n,
                            "samples": [60] * n, "in_alarm": [False] * n}, _BASELINE_SCHEMA)

    sink = StoreSink(store)
    result = sink.write({"baselines": rows([NOW] * 3)})
    assert result.written == 3 and result.dead == []
    result = sink.write({"baselines": rows([NOW + 1, 1e11, NOW + 1])})  # year ~5138
    assert result.written == 2 and [d.reason for d in result.dead] == ["clock"]
    assert "baselines.ts=" in result.dead[0].message
    assert store.query("SELECT count() FROM {database}.baselines").scalar() == 5
    stored = store.query("SELECT entity, toFloat64(ts), mean, scale, samples, in_alarm FROM "
                         "{database}.baselines ORDER BY ts, entity LIMIT 1").rows[0]
    assert list(stored) == ["n/0", pytest.approx(NOW, abs=1e-3), 1.0, 0.5, 60, False]
