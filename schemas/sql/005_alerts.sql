-- Every alert state change with its evidence (JSON), for the alerts dashboard.
CREATE TABLE IF NOT EXISTS {database}.alerts
(
    cluster       LowCardinality(String),
    alert_id      String,
    fingerprint   String,
    status        LowCardinality(String),
    severity      LowCardinality(String),
    check         LowCardinality(String),
    summary       String,
    ts            DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    starts_at     DateTime64(3, 'UTC'),
    ends_at       Nullable(DateTime64(3, 'UTC')),
    job_id        LowCardinality(String),
    node          LowCardinality(String),
    rank          Nullable(UInt32),
    gpu           Nullable(UInt8),
    evidence      String CODEC(ZSTD(3)),
    labels        Map(LowCardinality(String), String),
    runbook_url   String,
    dashboard_url String,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (fingerprint, ts, status)
TTL toDateTime(ingested_at) + INTERVAL 365 DAY;
