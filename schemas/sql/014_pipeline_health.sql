-- Issue 7 (Grafana): the workers' own health, written every few seconds, so the pipeline
-- dashboard has data: one row per (worker, metric[, topic, partition]) per interval, long
-- format as in a metrics store. Metrics: ingest_msgs_per_s, records_per_s,
-- dead_letters_total, sink_batch_ms, consumer_lag (per topic/partition: messages not yet
-- read), alerts_queued, deliveries_failed_total.
CREATE TABLE IF NOT EXISTS {database}.pipeline_health
(
    ts          DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    worker      LowCardinality(String),
    metric      LowCardinality(String),
    topic       LowCardinality(String),
    partition   Int32,
    value       Float64 CODEC(Gorilla, ZSTD(1)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (metric, worker, topic, partition, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY;
