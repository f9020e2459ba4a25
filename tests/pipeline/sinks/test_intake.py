"""The intake path (records → Arrow columns → the stored tables) stores exactly what the
JSON-lines path through the intake views stored, and what the reference row flattening
(:func:`rows_for`) describes, column for column, on real chdb."""

import random
import time

import msgspec
import pytest

from trainguard.pipeline.sinks.intake import intake_item, intake_tables
from trainguard.pipeline.sinks.rows import rows_for
from trainguard.pipeline.store import migrate
from trainguard.pipeline.store.errors import StoreDataError
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.ranks import RankEvent
from trainguard.schemas.records import (
    GpuProcess,
    GpuSample,
    GpuSampleBatch,
    StepBatch,
    StepRecord,
    XidEvent,
)

NOW = time.time()
TABLES = [("sample_batches", "node, ts"), ("gpu_samples", "node, gpu, ts"),
          ("steps", "job_id, step, rank, ts"), ("rank_events", "job_id, rank, ts, event")]


def _records():
    full = GpuSample(
        index=0, uuid="GPU-1", model="H100", util_gpu_pct=97.5, util_mem_pct=40.0,
        mem_used_bytes=70 << 30, mem_total_bytes=80 << 30, power_w=650.25, power_limit_w=700.0,
        temp_c=71.0, sm_clock_mhz=1980, mem_clock_mhz=2619, clock_event_reasons=4,
        pcie_rx_bytes_s=1.5e9, pcie_tx_bytes_s=1.25e9, nvlink_rx_bytes=10**12,
        nvlink_tx_bytes=2 * 10**12, ecc_corrected=3, ecc_uncorrected=0,
        remapped_rows_correctable=1, remapped_rows_uncorrectable=0, remap_pending=False,
        remap_failed=False, xid_events=[XidEvent(xid=79, ts=NOW, detail="fell off the bus")],
        compute_procs=2, processes=[GpuProcess(pid=4242, used_mem_bytes=1 << 30),
                                    GpuProcess(pid=4243)],
        errors={"power_w": "NVML_ERROR_UNKNOWN"},
    )
    sparse = GpuSample(index=7, util_gpu_pct=3.0)  # most fields not reported: NULLs
    lost = GpuSample(index=2, lost=True)
    batch = GpuSampleBatch(cluster="c", node="node-a", ts=NOW, seq=12, agent_id="ag",
                           driver_version="550.54", gpus=[full, sparse, lost], job_id="job")
    step = StepRecord(job_id="job", rank=0, world_size=2, node="node-a", step=41, ts=NOW,
                      local_rank=0, gpu_index=0, loss=2.5, grad_norm=1.25, lr=3e-4,
                      step_time_s=0.5, samples_per_s=256.0, tokens_per_s=5e5, loss_scale=1024.0,
                      param_checksum="abc", env_fingerprint="def", dp_rank=0, tp_rank=1,
                      pp_rank=0, local_grad_norm=2.5, compute_time_s=0.4,
                      seed_fingerprint="s1", shard=3, ep_rank=1, data_epoch=2,
                      checksum_step=40)
    bad = StepRecord(job_id="job", rank=1, world_size=2, node="node-a", step=41, ts=NOW,
                     nonfinite=["loss", "grad_norm"])
    events = [RankEvent(rank=1, ts=NOW, event="exited", pid=77, exit_code=1, signal=9),
              RankEvent(rank=0, ts=NOW, event="waiting", step=41, since=NOW - 30.25,
                        collective=5),
              RankEvent(rank=0, ts=NOW + 1, event="bye", reason="finished")]
    steps = StepBatch(cluster="c", node="node-a", job_id="job", ts=NOW, seq=3, agent_id="ag",
                      steps=[step, bad], events=events)
    return [batch, steps]


def _random_records(rng: random.Random, n: int):
    """Sample and step batches with sub-millisecond times and a mix of NULLs."""
    out = []
    for i in range(n):
        ts = NOW - rng.random() * 86400
        maybe = lambda v: v if rng.random() < 0.7 else None  # noqa: E731
        gpus = [GpuSample(index=g, util_gpu_pct=maybe(rng.random() * 100),
                          power_w=maybe(rng.random() * 700), temp_c=maybe(30 + rng.random() * 60),
                          mem_used_bytes=maybe(rng.randrange(1 << 40)),
                          pcie_rx_bytes_s=maybe(rng.random() * 1e10), uuid=maybe(f"GPU-{g}"),
                          lost=rng.random() < 0.1) for g in range(rng.randrange(0, 9))]
        out.append(GpuSampleBatch(cluster="c", node=f"n{i}", ts=ts, seq=i, agent_id="a",
                                  gpus=gpus, job_id=maybe("j")))
        ranks = [StepRecord(job_id="j", rank=r, world_size=8, node=f"n{i}", step=i,
                            ts=ts + rng.random(), loss=maybe(rng.random() * 5),
                            step_time_s=maybe(rng.random()), tokens_per_s=maybe(rng.random() * 1e6),
                            param_checksum=maybe("p")) for r in range(rng.randrange(1, 9))]
        out.append(StepBatch(cluster="c", node=f"n{i}", job_id="j", ts=ts, seq=i, agent_id="a",
                             steps=ranks))
    return out


def _json_line(record, partition, offset):
    """The intake line of the JSON-lines path this replaced (into the ``*_in`` views)."""
    body = msgspec.json.encode(record)
    return b'{"_tg_partition":%d,"_tg_offset":%d,%s' % (partition, offset, body[1:])


def _columnar(store, records):
    decoder = RecordDecoder(GpuSampleBatch | StepBatch)
    by_name: dict[str, list] = {}
    for offset, record in enumerate(records):
        decoded = decoder.decode(encode(record))  # as the worker sees it: off the wire
        name, item = intake_item(decoded, partition=1, offset=offset)
        by_name.setdefault(name, []).append(item)
    for name, items in by_name.items():
        for table, data in intake_tables(name, items).items():
            store.insert_arrow(table, data)


def _table(store, table, order):
    return store.query(f"SELECT * EXCEPT ingested_at FROM {{database}}.{table} ORDER BY {order}")


def _same_tables(got_store, want_store):
    for table, order in TABLES:
        got, want = _table(got_store, table, order), _table(want_store, table, order)
        assert got.columns == want.columns
        assert got.rows == want.rows and len(got.rows) > 0, table


def test_columns_store_the_same_rows_as_the_reference_flattening(chdb_store_factory):
    via_columns, via_rows = chdb_store_factory(), chdb_store_factory()
    migrate(via_columns)
    migrate(via_rows)
    _columnar(via_columns, _records())
    for offset, record in enumerate(_records()):
        by_table: dict[str, list] = {}
        for t, row in rows_for(record, 1, offset):
            by_table.setdefault(t, []).append(row)
        for t, rows in by_table.items():
            via_rows.insert_rows(t, rows)
    _same_tables(via_columns, via_rows)
    # The chained rollup views fire for columnar inserts too.
    assert via_columns.query("SELECT count() FROM {database}.gpu_samples_1m").scalar() == 3
    assert via_columns.query("SELECT count() FROM {database}.steps_1m").scalar() == 2


def test_columns_store_exactly_what_the_json_lines_through_the_views_stored(
        chdb_store_factory):
    via_columns, via_views = chdb_store_factory(), chdb_store_factory()
    migrate(via_columns)
    migrate(via_views)
    records = _records() + _random_records(random.Random(17), 60)
    _columnar(via_columns, records)
    for offset, record in enumerate(records):
        name = "sample_batches_in" if isinstance(record, GpuSampleBatch) else "step_batches_in"
        via_views.insert_json_lines(name, [_json_line(record, 1, offset)])
    _same_tables(via_columns, via_views)


def test_a_batch_written_twice_leaves_one_row_per_gpu_and_rank(chdb_store):
    migrate(chdb_store)
    _columnar(chdb_store, _records())
    _columnar(chdb_store, _records())
    counts = {t: chdb_store.query(f"SELECT count() FROM {{database}}.{t} FINAL").scalar()
              for t, _ in TABLES}
    assert counts == {"sample_batches": 1, "gpu_samples": 3, "steps": 2, "rank_events": 3}


def test_a_value_its_column_cannot_hold_is_a_store_data_error():
    batch = _records()[0]
    huge = msgspec.structs.replace(batch.gpus[0], index=256)  # gpu is a UInt8 column
    with pytest.raises(StoreDataError, match="sample batch"):
        intake_tables("sample_batches_in",
                      [(msgspec.structs.replace(batch, gpus=[huge]), 0, 0)])


def test_only_sample_and_step_batches_take_the_intake_path():
    step = StepRecord(job_id="j", rank=0, world_size=1, node="n", step=1, ts=NOW)
    assert intake_item(step) is None
    batch = _records()[0]
    assert intake_item(batch, partition=4, offset=99) == ("sample_batches_in", (batch, 4, 99))
    far = msgspec.structs.replace(batch, ts=1e308)  # out of the store's range: the row path
    assert intake_item(far) is None
