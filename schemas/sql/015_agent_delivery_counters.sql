-- Issue 13 (a node's delivery never wedges): the agent's spool write errors, records held
-- in memory while the disk refuses them, messages written to the node's dead-letter file,
-- and step reporters its intake forgot.
ALTER TABLE {database}.agent_heartbeats
    ADD COLUMN IF NOT EXISTS spool_write_errors UInt64 AFTER rss_bytes,
    ADD COLUMN IF NOT EXISTS spool_memory_depth UInt64 AFTER spool_write_errors,
    ADD COLUMN IF NOT EXISTS dead_lettered UInt64 AFTER spool_memory_depth,
    ADD COLUMN IF NOT EXISTS reporters_evicted UInt64 AFTER dead_lettered;
