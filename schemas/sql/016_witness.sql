-- Issue 14 (the agent as a witness): what the node agent hashed itself, beside what the
-- trainers report: checkpoint files closed after writing (SHA-256 of the bytes) and code
-- trees' Merkle digests with the files that changed; the file a checkpoint save names;
-- the agent's counts of files hashed and skipped.
CREATE TABLE IF NOT EXISTS {database}.witness
(
    cluster       LowCardinality(String),
    node          LowCardinality(String),
    job_id        LowCardinality(String),
    ts            DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    subject       LowCardinality(String),
    path          String,
    digest        String,
    size          UInt64,
    changed_at    Nullable(DateTime64(3, 'UTC')),
    files         Nullable(UInt64),
    changed_files Array(String),
    changed_count UInt64,
    skipped       LowCardinality(String),
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (cluster, node, path, ts, digest)
TTL toDateTime(ingested_at) + INTERVAL 365 DAY;

ALTER TABLE {database}.checkpoints ADD COLUMN IF NOT EXISTS path String AFTER digest;

ALTER TABLE {database}.agent_heartbeats
    ADD COLUMN IF NOT EXISTS witness_hashed UInt64 AFTER reporters_evicted,
    ADD COLUMN IF NOT EXISTS witness_skipped UInt64 AFTER witness_hashed;
