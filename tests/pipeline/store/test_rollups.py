"""The 1-minute rollup materialized views fill as raw rows land."""

import time

from trainguard.pipeline.sinks.rows import rows_for
from trainguard.pipeline.store import migrate
from trainguard.schemas.records import GpuSample, GpuSampleBatch, StepBatch, StepRecord

MINUTE = (int(time.time()) // 60) * 60


def _insert(store, record):
    by_table = {}
    for table, row in rows_for(record):
        by_table.setdefault(table, []).append(row)
    for table, rows in by_table.items():
        store.insert_rows(table, rows)


def test_gpu_rollup_averages_and_extremes_per_minute(chdb_store):
    migrate(chdb_store)
    for i, (util, power) in enumerate([(90.0, 600.0), (100.0, 700.0), (20.0, 650.0)]):
        _insert(chdb_store, GpuSampleBatch(cluster="c", node="n1", ts=MINUTE + i, seq=i,
                                           agent_id="a", gpus=[GpuSample(index=0, util_gpu_pct=util,
                                                                         power_w=power)]))
    rows = chdb_store.query(
        "SELECT node, gpu, avgMerge(util_gpu_avg), min(util_gpu_min), max(power_w_max) "
        "FROM {database}.gpu_samples_1m GROUP BY node, gpu"
    ).rows
    assert rows == [("n1", 0, 70.0, 20.0, 700.0)]


def test_step_rollup_per_rank_per_minute(chdb_store):
    migrate(chdb_store)
    steps = [StepRecord(job_id="j", rank=r, world_size=2, node="n", step=s, ts=MINUTE + s,
                        loss=1.0 + r, step_time_s=0.5) for r in range(2) for s in range(3)]
    _insert(chdb_store, StepBatch(cluster="c", node="n", job_id="j", ts=MINUTE, seq=0,
                                  agent_id="a", steps=steps))
    rows = chdb_store.query(
        "SELECT rank, max(step_max), avgMerge(loss_avg) FROM {database}.steps_1m "
        "GROUP BY rank ORDER BY rank"
    ).rows
    assert rows == [(0, 2, 1.0), (1, 2, 2.0)]
