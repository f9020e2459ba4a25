-- One row per node per tick: the delivery ledger of GPU sample batches.
-- ReplacingMergeTree + ORDER BY (node, ts) makes a replayed batch collapse into the
-- original row (at-least-once delivery + idempotent table = no duplicates); read with
-- FINAL where exact counts matter. TTL counts from ingestion, not event time, so a
-- replay of old telemetry is kept instead of being silently dropped on insert.
CREATE TABLE IF NOT EXISTS {database}.sample_batches
(
    cluster        LowCardinality(String),
    node           LowCardinality(String),
    ts             DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    seq            UInt64 CODEC(Delta, ZSTD(1)),
    agent_id       LowCardinality(String),
    gpu_count      UInt16,
    lost_gpus      UInt16,
    driver_version LowCardinality(String),
    schema_version UInt16,
    kafka_partition Int32,
    kafka_offset   Int64 CODEC(Delta, ZSTD(1)),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (node, ts)
TTL toDateTime(ingested_at) + INTERVAL 30 DAY;
