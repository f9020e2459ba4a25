-- One row per GPU per tick, for the fleet dashboards (heatmaps by node, throttling,
-- XID/ECC). Nullable columns keep "not reported" apart from a real zero.
CREATE TABLE IF NOT EXISTS {database}.gpu_samples
(
    cluster         LowCardinality(String),
    node            LowCardinality(String),
    gpu             UInt8,
    ts              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    uuid            LowCardinality(String),
    model           LowCardinality(String),
    lost            Bool,
    util_gpu_pct    Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    util_mem_pct    Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    mem_used_bytes  Nullable(UInt64) CODEC(Delta, ZSTD(1)),
    mem_total_bytes Nullable(UInt64) CODEC(ZSTD(1)),
    power_w         Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    power_limit_w   Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    temp_c          Nullable(Float32) CODEC(Gorilla, ZSTD(1)),
    sm_clock_mhz    Nullable(UInt32) CODEC(Delta, ZSTD(1)),
    mem_clock_mhz   Nullable(UInt32) CODEC(Delta, ZSTD(1)),
    clock_event_reasons Nullable(UInt64) CODEC(ZSTD(1)),
    pcie_rx_bytes_s Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    pcie_tx_bytes_s Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    nvlink_rx_bytes Nullable(UInt64) CODEC(Delta, ZSTD(1)),
    nvlink_tx_bytes Nullable(UInt64) CODEC(Delta, ZSTD(1)),
    ecc_corrected   Nullable(UInt64) CODEC(Delta, ZSTD(1)),
    ecc_uncorrected Nullable(UInt64) CODEC(Delta, ZSTD(1)),
    remapped_rows_correctable   Nullable(UInt32),
    remapped_rows_uncorrectable Nullable(UInt32),
    remap_pending   Nullable(Bool),
    remap_failed    Nullable(Bool),
    xids            Array(UInt16),
    compute_procs   Nullable(UInt16),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (node, gpu, ts)
TTL toDateTime(ingested_at) + INTERVAL 30 DAY;
