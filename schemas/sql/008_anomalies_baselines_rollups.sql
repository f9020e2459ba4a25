-- Issue 4 (baselines and anomalies). One row per anomaly: the identity of an anomaly is
-- (entity, metric, detector, first_seen), so a replay after a worker crash collapses.
CREATE TABLE IF NOT EXISTS {database}.anomalies
(
    cluster          LowCardinality(String),
    entity_kind      LowCardinality(String),
    entity           String,
    node             LowCardinality(String),
    gpu              Nullable(UInt8),
    job_id           LowCardinality(String),
    rank             Nullable(UInt32),
    metric           LowCardinality(String),
    pattern          LowCardinality(String),
    first_seen       DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    ts               DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    value            Float64 CODEC(Gorilla, ZSTD(1)),
    baseline         Float64 CODEC(Gorilla, ZSTD(1)),
    scale            Float64 CODEC(Gorilla, ZSTD(1)),
    score            Float64 CODEC(Gorilla, ZSTD(1)),
    window           UInt32,
    detector         LowCardinality(String),
    detector_version LowCardinality(String),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (entity, metric, detector, first_seen)
TTL toDateTime(ingested_at) + INTERVAL 365 DAY;

-- Periodic snapshots of each entity's baseline, to explain an anomaly afterwards
-- ("what did normal look like at the time?").
CREATE TABLE IF NOT EXISTS {database}.baselines
(
    cluster     LowCardinality(String),
    entity_kind LowCardinality(String),
    entity      String,
    metric      LowCardinality(String),
    ts          DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    mean        Float64 CODEC(Gorilla, ZSTD(1)),
    scale       Float64 CODEC(Gorilla, ZSTD(1)),
    samples     UInt64,
    in_alarm    Bool,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (entity, metric, ts)
TTL toDateTime(ingested_at) + INTERVAL 30 DAY;

-- 1-minute rollups for the dashboards. min/max are insensitive to the duplicate inserts a
-- replay can cause; averages can shift slightly then (exact figures: raw tables + FINAL).
CREATE TABLE IF NOT EXISTS {database}.gpu_samples_1m
(
    cluster        LowCardinality(String),
    node           LowCardinality(String),
    gpu            UInt8,
    minute         DateTime('UTC'),
    util_gpu_avg   AggregateFunction(avg, Nullable(Float32)),
    util_gpu_min   SimpleAggregateFunction(min, Nullable(Float32)),
    power_w_avg    AggregateFunction(avg, Nullable(Float32)),
    power_w_max    SimpleAggregateFunction(max, Nullable(Float32)),
    temp_c_max     SimpleAggregateFunction(max, Nullable(Float32)),
    throttled_max  SimpleAggregateFunction(max, UInt8),
    lost_max       SimpleAggregateFunction(max, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (cluster, node, gpu, minute)
TTL minute + INTERVAL 365 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.gpu_samples_1m_mv TO {database}.gpu_samples_1m AS
SELECT
    cluster, node, gpu, toStartOfMinute(ts) AS minute,
    avgState(util_gpu_pct) AS util_gpu_avg,
    min(util_gpu_pct) AS util_gpu_min,
    avgState(power_w) AS power_w_avg,
    max(power_w) AS power_w_max,
    max(temp_c) AS temp_c_max,
    max(toUInt8(ifNull(clock_event_reasons, 0) > 1)) AS throttled_max,
    max(toUInt8(lost)) AS lost_max
FROM {database}.gpu_samples
GROUP BY cluster, node, gpu, minute;

CREATE TABLE IF NOT EXISTS {database}.steps_1m
(
    cluster          LowCardinality(String),
    job_id           LowCardinality(String),
    rank             UInt32,
    minute           DateTime('UTC'),
    step_max         SimpleAggregateFunction(max, UInt64),
    loss_avg         AggregateFunction(avg, Nullable(Float64)),
    grad_norm_max    SimpleAggregateFunction(max, Nullable(Float64)),
    step_time_s_avg  AggregateFunction(avg, Nullable(Float32)),
    step_time_s_max  SimpleAggregateFunction(max, Nullable(Float32)),
    tokens_per_s_avg AggregateFunction(avg, Nullable(Float32))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (cluster, job_id, rank, minute)
TTL minute + INTERVAL 365 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.steps_1m_mv TO {database}.steps_1m AS
SELECT
    cluster, job_id, rank, toStartOfMinute(ts) AS minute,
    max(step) AS step_max,
    avgState(loss) AS loss_avg,
    max(grad_norm) AS grad_norm_max,
    avgState(step_time_s) AS step_time_s_avg,
    max(step_time_s) AS step_time_s_max,
    avgState(tokens_per_s) AS tokens_per_s_avg
FROM {database}.steps
GROUP BY cluster, job_id, rank, minute;
