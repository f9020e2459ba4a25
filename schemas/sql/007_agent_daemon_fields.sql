-- Issue 3 (agent daemon): GPU processes and read errors per sample; the agent's own
-- spool, latency and resource gauges in heartbeats.
ALTER TABLE {database}.gpu_samples
    ADD COLUMN IF NOT EXISTS proc_pids Array(UInt32) AFTER compute_procs,
    ADD COLUMN IF NOT EXISTS proc_mem_bytes Array(UInt64) AFTER proc_pids,
    ADD COLUMN IF NOT EXISTS read_errors Map(LowCardinality(String), String) AFTER proc_mem_bytes;

ALTER TABLE {database}.steps
    ADD COLUMN IF NOT EXISTS nonfinite Array(LowCardinality(String)) AFTER env_fingerprint;

ALTER TABLE {database}.agent_heartbeats
    ADD COLUMN IF NOT EXISTS steps_dropped UInt64 AFTER datagrams_dropped,
    ADD COLUMN IF NOT EXISTS spool_bytes UInt64 AFTER spool_depth,
    ADD COLUMN IF NOT EXISTS tick_overruns UInt64 AFTER collect_errors,
    ADD COLUMN IF NOT EXISTS send_latency_ms_p50 Nullable(Float32) AFTER tick_overruns,
    ADD COLUMN IF NOT EXISTS send_latency_ms_max Nullable(Float32) AFTER send_latency_ms_p50,
    ADD COLUMN IF NOT EXISTS cpu_pct Nullable(Float32) AFTER send_latency_ms_max,
    ADD COLUMN IF NOT EXISTS rss_bytes Nullable(UInt64) AFTER cpu_pct;
