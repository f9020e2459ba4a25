-- Issue 5 (consistency checks): the job a node's GPUs run (sample batches), the parallel
-- layout, pre-all-reduce gradient norm, compute time and seed fingerprint of each rank
-- (steps), checkpoint save/load digests, and the findings of the cross-rank checks.
ALTER TABLE {database}.sample_batches ADD COLUMN IF NOT EXISTS job_id LowCardinality(String) AFTER node;
ALTER TABLE {database}.gpu_samples ADD COLUMN IF NOT EXISTS job_id LowCardinality(String) AFTER node;
ALTER TABLE {database}.steps
    ADD COLUMN IF NOT EXISTS dp_rank Nullable(UInt32) AFTER nonfinite,
    ADD COLUMN IF NOT EXISTS tp_rank Nullable(UInt32) AFTER dp_rank,
    ADD COLUMN IF NOT EXISTS pp_rank Nullable(UInt32) AFTER tp_rank,
    ADD COLUMN IF NOT EXISTS local_grad_norm Nullable(Float64) CODEC(Gorilla, ZSTD(1)) AFTER pp_rank,
    ADD COLUMN IF NOT EXISTS compute_time_s Nullable(Float32) CODEC(Gorilla, ZSTD(1)) AFTER local_grad_norm,
    ADD COLUMN IF NOT EXISTS seed_fingerprint LowCardinality(String) AFTER compute_time_s;

-- The intake tables and their views are rebuilt with the new fields (Null tables hold
-- no data, so nothing is lost; the worker migrates before it consumes).
DROP VIEW IF EXISTS {database}.sample_batches_in_mv;
DROP VIEW IF EXISTS {database}.gpu_samples_in_mv;
DROP VIEW IF EXISTS {database}.step_batches_in_mv;
DROP TABLE IF EXISTS {database}.sample_batches_in;
DROP TABLE IF EXISTS {database}.step_batches_in;

CREATE TABLE IF NOT EXISTS {database}.sample_batches_in
(
    _tg_partition  Int32,
    _tg_offset     Int64,
    cluster        String,
    node           String,
    ts             Float64,
    seq            UInt64,
    agent_id       String,
    driver_version Nullable(String),
    schema_version UInt16,
    job_id         Nullable(String),
    gpus Array(Tuple(
        index UInt8,
        uuid Nullable(String),
        model Nullable(String),
        lost Bool,
        util_gpu_pct Nullable(Float32),
        util_mem_pct Nullable(Float32),
        mem_used_bytes Nullable(UInt64),
        mem_total_bytes Nullable(UInt64),
        power_w Nullable(Float32),
        power_limit_w Nullable(Float32),
        temp_c Nullable(Float32),
        sm_clock_mhz Nullable(UInt32),
        mem_clock_mhz Nullable(UInt32),
        clock_event_reasons Nullable(UInt64),
        pcie_rx_bytes_s Nullable(Float64),
        pcie_tx_bytes_s Nullable(Float64),
        nvlink_rx_bytes Nullable(UInt64),
        nvlink_tx_bytes Nullable(UInt64),
        ecc_corrected Nullable(UInt64),
        ecc_uncorrected Nullable(UInt64),
        remapped_rows_correctable Nullable(UInt32),
        remapped_rows_uncorrectable Nullable(UInt32),
        remap_pending Nullable(Bool),
        remap_failed Nullable(Bool),
        xid_events Array(Tuple(xid UInt16, ts Float64, detail Nullable(String))),
        compute_procs Nullable(UInt16),
        processes Array(Tuple(pid UInt32, used_mem_bytes Nullable(UInt64))),
        errors Map(String, String)
    ))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.sample_batches_in_mv
TO {database}.sample_batches AS
SELECT
    cluster, node, ifNull(job_id, '') AS job_id, toDateTime64(ts, 3, 'UTC') AS ts, seq, agent_id,
    length(gpus) AS gpu_count,
    arrayCount(g -> g.lost, gpus) AS lost_gpus,
    ifNull(driver_version, '') AS driver_version,
    schema_version,
    _tg_partition AS kafka_partition,
    _tg_offset AS kafka_offset
FROM {database}.sample_batches_in;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.gpu_samples_in_mv
TO {database}.gpu_samples AS
SELECT
    cluster, node, ifNull(job_id, '') AS job_id, g.index AS gpu, toDateTime64(ts, 3, 'UTC') AS ts,
    ifNull(g.uuid, '') AS uuid, ifNull(g.model, '') AS model, g.lost AS lost,
    g.util_gpu_pct AS util_gpu_pct, g.util_mem_pct AS util_mem_pct,
    g.mem_used_bytes AS mem_used_bytes, g.mem_total_bytes AS mem_total_bytes,
    g.power_w AS power_w, g.power_limit_w AS power_limit_w, g.temp_c AS temp_c,
    g.sm_clock_mhz AS sm_clock_mhz, g.mem_clock_mhz AS mem_clock_mhz,
    g.clock_event_reasons AS clock_event_reasons,
    g.pcie_rx_bytes_s AS pcie_rx_bytes_s, g.pcie_tx_bytes_s AS pcie_tx_bytes_s,
    g.nvlink_rx_bytes AS nvlink_rx_bytes, g.nvlink_tx_bytes AS nvlink_tx_bytes,
    g.ecc_corrected AS ecc_corrected, g.ecc_uncorrected AS ecc_uncorrected,
    g.remapped_rows_correctable AS remapped_rows_correctable,
    g.remapped_rows_uncorrectable AS remapped_rows_uncorrectable,
    g.remap_pending AS remap_pending, g.remap_failed AS remap_failed,
    arrayMap(e -> e.xid, g.xid_events) AS xids,
    g.compute_procs AS compute_procs,
    arrayMap(p -> p.pid, g.processes) AS proc_pids,
    arrayMap(p -> ifNull(p.used_mem_bytes, 0), g.processes) AS proc_mem_bytes,
    g.errors AS read_errors
FROM {database}.sample_batches_in
ARRAY JOIN gpus AS g;

CREATE TABLE IF NOT EXISTS {database}.step_batches_in
(
    _tg_partition Int32,
    _tg_offset    Int64,
    cluster       String,
    steps Array(Tuple(
        job_id String,
        rank UInt32,
        world_size UInt32,
        node String,
        step UInt64,
        ts Float64,
        local_rank Nullable(UInt16),
        gpu_index Nullable(UInt8),
        loss Nullable(Float64),
        grad_norm Nullable(Float64),
        lr Nullable(Float64),
        step_time_s Nullable(Float32),
        samples_per_s Nullable(Float32),
        tokens_per_s Nullable(Float32),
        loss_scale Nullable(Float32),
        param_checksum Nullable(String),
        env_fingerprint Nullable(String),
        nonfinite Array(String),
        dp_rank Nullable(UInt32),
        tp_rank Nullable(UInt32),
        pp_rank Nullable(UInt32),
        local_grad_norm Nullable(Float64),
        compute_time_s Nullable(Float32),
        seed_fingerprint Nullable(String)
    ))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.step_batches_in_mv
TO {database}.steps AS
SELECT
    cluster, s.job_id AS job_id, s.step AS step, s.rank AS rank, s.world_size AS world_size,
    s.node AS node, s.local_rank AS local_rank, s.gpu_index AS gpu,
    toDateTime64(s.ts, 3, 'UTC') AS ts,
    s.loss AS loss, s.grad_norm AS grad_norm, s.lr AS lr, s.step_time_s AS step_time_s,
    s.samples_per_s AS samples_per_s, s.tokens_per_s AS tokens_per_s,
    s.loss_scale AS loss_scale,
    ifNull(s.param_checksum, '') AS param_checksum,
    ifNull(s.env_fingerprint, '') AS env_fingerprint,
    s.nonfinite AS nonfinite,
    s.dp_rank AS dp_rank, s.tp_rank AS tp_rank, s.pp_rank AS pp_rank,
    s.local_grad_norm AS local_grad_norm, s.compute_time_s AS compute_time_s,
    ifNull(s.seed_fingerprint, '') AS seed_fingerprint
FROM {database}.step_batches_in
ARRAY JOIN steps AS s;

-- One row per rank per checkpoint save or load: a load whose digest differs from the
-- save's is a modified checkpoint.
CREATE TABLE IF NOT EXISTS {database}.checkpoints
(
    cluster       LowCardinality(String),
    job_id        LowCardinality(String),
    checkpoint_id String,
    rank          UInt32,
    action        LowCardinality(String),
    node          LowCardinality(String),
    step          UInt64,
    ts            DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    digest        String,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (job_id, checkpoint_id, rank, action, ts)
TTL toDateTime(ingested_at) + INTERVAL 365 DAY;

-- Findings of the cross-rank / cross-node consistency checks, one row per finding
-- (finding_id is stable across replays).
CREATE TABLE IF NOT EXISTS {database}.findings
(
    cluster       LowCardinality(String),
    job_id        LowCardinality(String),
    check         LowCardinality(String),
    category      LowCardinality(String),
    finding_id    String,
    first_seen    DateTime64(3, 'UTC'),
    ts            DateTime64(3, 'UTC'),
    last_seen     DateTime64(3, 'UTC'),
    step          Nullable(UInt64),
    ranks         Array(UInt32),
    nodes         Array(LowCardinality(String)),
    gpu           Nullable(UInt8),
    observed      String,
    expected      String,
    score         Float64,
    summary       String,
    evidence      String,
    check_version LowCardinality(String),
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (cluster, job_id, check, finding_id)
TTL toDateTime(ingested_at) + INTERVAL 365 DAY;
