"""The intake path (JSON lines → Null tables → materialized views) stores exactly what the
reference row flattening (:func:`rows_for`) describes, column for column, on real chdb."""

import time

from trainguard.pipeline.sinks.intake import intake_line
from trainguard.pipeline.sinks.rows import rows_for
from trainguard.pipeline.store import migrate
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import (
    GpuProcess,
    GpuSample,
    GpuSampleBatch,
    StepBatch,
    StepRecord,
    XidEvent,
)

NOW = time.time()


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
                      seed_fingerprint="s1")
    bad = StepRecord(job_id="job", rank=1, world_size=2, node="node-a", step=41, ts=NOW,
                     nonfinite=["loss", "grad_norm"])
    steps = StepBatch(cluster="c", node="node-a", job_id="job", ts=NOW, seq=3, agent_id="ag",
                      steps=[step, bad])
    return [batch, steps]


def _table(store, table, order):
    return store.query(f"SELECT * EXCEPT ingested_at FROM {{database}}.{table} ORDER BY {order}")


def test_intake_path_stores_the_same_rows_as_the_reference_flattening(chdb_store_factory):
    via_intake, via_rows = chdb_store_factory(), chdb_store_factory()
    migrate(via_intake)
    migrate(via_rows)
    decoder = RecordDecoder(GpuSampleBatch | StepBatch)
    for offset, record in enumerate(_records()):
        decoded = decoder.decode(encode(record))  # as the worker sees it: off the wire
        table, line = intake_line(decoded, partition=1, offset=offset)
        via_intake.insert_json_lines(table, [line])
        by_table: dict[str, list] = {}
        for t, row in rows_for(decoded, 1, offset):
            by_table.setdefault(t, []).append(row)
        for t, rows in by_table.items():
            via_rows.insert_rows(t, rows)
    for table, order in [("sample_batches", "node, ts"), ("gpu_samples", "node, gpu"),
                         ("steps", "job_id, step, rank")]:
        got, want = _table(via_intake, table, order), _table(via_rows, table, order)
        assert got.columns == want.columns
        assert got.rows == want.rows and len(got.rows) > 0, table
    # The chained rollup views fire for intake inserts too.
    assert via_intake.query("SELECT count() FROM {database}.gpu_samples_1m").scalar() == 3
    assert via_intake.query("SELECT count() FROM {database}.steps_1m").scalar() == 2


def test_only_sample_and_step_batches_take_the_intake_path():
    step = StepRecord(job_id="j", rank=0, world_size=1, node="n", step=1, ts=NOW)
    assert intake_line(step) is None
    line = intake_line(_records()[0], partition=4, offset=99)
    assert line is not None and line[0] == "sample_batches_in"
    assert line[1].startswith(b'{"_tg_partition":4,"_tg_offset":99,"kind":"gpu_sample_batch"')
