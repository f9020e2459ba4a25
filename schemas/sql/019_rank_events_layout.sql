-- Issue 15 (real training jobs report): the sharded layout and the data epoch of each step
-- (the replica group is (tp_rank, pp_rank, shard, ep_rank); a seed fingerprint may change
-- at a new data epoch), the step a late parameter checksum hashes, and what the node
-- agents and the trainer kit report about the ranks' processes (StepBatch.events:
-- exited / stopped / resumed / bye / waiting -> rank_exited and rank_hung findings).
ALTER TABLE {database}.steps
    ADD COLUMN IF NOT EXISTS shard Nullable(UInt32) AFTER seed_fingerprint,
    ADD COLUMN IF NOT EXISTS ep_rank Nullable(UInt32) AFTER shard,
    ADD COLUMN IF NOT EXISTS data_epoch Nullable(UInt64) AFTER ep_rank,
    ADD COLUMN IF NOT EXISTS checksum_step Nullable(UInt64) AFTER data_epoch;

-- One row per rank process event, as the agent sent it (ordered for "what happened to
-- rank R of job J", the first question of both runbooks).
CREATE TABLE IF NOT EXISTS {database}.rank_events
(
    cluster     LowCardinality(String),
    node        LowCardinality(String),
    job_id      LowCardinality(String),
    rank        UInt32,
    ts          DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    event       LowCardinality(String),
    pid         Nullable(UInt32),
    exit_code   Nullable(UInt8),
    signal      Nullable(UInt8),
    reason      LowCardinality(String),
    step        Nullable(UInt64),
    since       Nullable(DateTime64(3, 'UTC')),
    collective  Nullable(UInt64),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (cluster, job_id, rank, ts, event)
TTL toDateTime(ingested_at) + INTERVAL 365 DAY;

-- The step intake table and its view are rebuilt with the new fields and the batch's
-- events (Null tables hold no data, so nothing is lost; the worker migrates before it
-- consumes).
DROP VIEW IF EXISTS {database}.step_batches_in_mv;
DROP VIEW IF EXISTS {database}.rank_events_in_mv;
DROP TABLE IF EXISTS {database}.step_batches_in;

CREATE TABLE IF NOT EXISTS {database}.step_batches_in
(
    _tg_partition Int32,
    _tg_offset    Int64,
    cluster       String,
    node          String,
    job_id        String,
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
        seed_fingerprint Nullable(String),
        shard Nullable(UInt32),
        ep_rank Nullable(UInt32),
        data_epoch Nullable(UInt64),
        checksum_step Nullable(UInt64)
    )),
    events Array(Tuple(
        rank UInt32,
        ts Float64,
        event String,
        pid Nullable(UInt32),
        exit_code Nullable(UInt8),
        signal Nullable(UInt8),
        reason Nullable(String),
        step Nullable(UInt64),
        since Nullable(Float64),
        collective Nullable(UInt64)
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
    ifNull(s.seed_fingerprint, '') AS seed_fingerprint,
    s.shard AS shard, s.ep_rank AS ep_rank, s.data_epoch AS data_epoch,
    s.checksum_step AS checksum_step
FROM {database}.step_batches_in
ARRAY JOIN steps AS s;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.rank_events_in_mv
TO {database}.rank_events AS
SELECT
    cluster, node, job_id, e.rank AS rank, toDateTime64(e.ts, 3, 'UTC') AS ts,
    e.event AS event, e.pid AS pid, e.exit_code AS exit_code, e.signal AS signal,
    ifNull(e.reason, '') AS reason, e.step AS step,
    if(isNull(e.since), NULL, toDateTime64(assumeNotNull(e.since), 3, 'UTC')) AS since,
    e.collective AS collective
FROM {database}.step_batches_in
ARRAY JOIN events AS e;
