-- Input the workers rejected: where it came from, why, and the first bytes of it.
-- The full original bytes stay in the dead-letter topic.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    topic        LowCardinality(String),
    partition    Int32,
    offset       Int64,
    reason       LowCardinality(String),
    message      String,
    payload_head String CODEC(ZSTD(3)),
    payload_size UInt32,
    ts           DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (topic, partition, offset)
TTL toDateTime(ingested_at) + INTERVAL 30 DAY;
