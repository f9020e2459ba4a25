-- Issue 6 (alert delivery). Silences: planned work on a job and/or a node, written by
-- `trainguard silence` and read by the alert lifecycle. Every change is a new version of
-- the same silence_id (expiring one early is inserting it again with ends_at = now); the
-- latest updated_at wins on merge, and readers use FINAL so they need not wait for it.
-- '' in job_id or node means any (at least one of the two is set).
CREATE TABLE IF NOT EXISTS {database}.silences
(
    silence_id String,
    job_id     LowCardinality(String),
    node       LowCardinality(String),
    starts_at  DateTime64(3, 'UTC'),
    ends_at    DateTime64(3, 'UTC'),
    reason     String,
    created_by String,
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY silence_id;

-- One row per final outcome (delivered, or failed after its retries) of an alert state change at a receiver (Alertmanager,
-- PagerDuty, a webhook), outcome 'delivered' or 'failed'. Every attempt is kept (plain
-- MergeTree): the failures are the record of an outage, and after a worker restart the
-- delivered (receiver, alert_id, status) keys tell what not to send again.
CREATE TABLE IF NOT EXISTS {database}.alert_deliveries
(
    receiver    LowCardinality(String),
    alert_id    String,
    fingerprint String,
    status      LowCardinality(String),
    severity    LowCardinality(String),
    outcome     LowCardinality(String),
    attempts    UInt32,
    detail      String,
    ts          DateTime64(3, 'UTC'),
    alert_ts    DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (receiver, alert_id, status, ts)
TTL toDateTime(ts) + INTERVAL 90 DAY;
