-- Agent liveness and self-reported counters (spool depth, drops), per node.
CREATE TABLE IF NOT EXISTS {database}.agent_heartbeats
(
    cluster           LowCardinality(String),
    node              LowCardinality(String),
    ts                DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    agent_id          LowCardinality(String),
    agent_version     LowCardinality(String),
    backend           LowCardinality(String),
    uptime_s          Float64,
    gpu_count         UInt16,
    batches_sent      UInt64 CODEC(Delta, ZSTD(1)),
    steps_received    UInt64 CODEC(Delta, ZSTD(1)),
    steps_malformed   UInt64 CODEC(Delta, ZSTD(1)),
    datagrams_dropped UInt64 CODEC(Delta, ZSTD(1)),
    send_errors       UInt64 CODEC(Delta, ZSTD(1)),
    spool_depth       UInt64 CODEC(ZSTD(1)),
    spool_dropped     UInt64 CODEC(Delta, ZSTD(1)),
    collect_errors    UInt64 CODEC(Delta, ZSTD(1)),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (node, ts)
TTL toDateTime(ingested_at) + INTERVAL 30 DAY;
