-- One row per rank per training step. ORDER BY (job_id, step, rank) serves both the
-- per-job charts and the cross-rank comparisons of one step.
CREATE TABLE IF NOT EXISTS {database}.steps
(
    cluster         LowCardinality(String),
    job_id          LowCardinality(String),
    step            UInt64 CODEC(Delta, ZSTD(1)),
    rank            UInt32,
    world_size      UInt32,
    node            LowCardinality(String),
    local_rank      Nullable(UInt16),
    gpu             Nullable(UInt8),
    ts              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    loss            Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    grad_norm       Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    lr              Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    step_time_s     Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    samples_per_s   Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    tokens_per_s    Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    loss_scale      Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    param_checksum  LowCardinality(String),
    env_fingerprint LowCardinality(String),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (job_id, step, rank)
TTL toDateTime(ingested_at) + INTERVAL 90 DAY;
