-- Issue 15 (the agent watches ranks' processes): rank lifecycle events the agent queued for
-- its jobs' step batches (exits, stops, resumes; trainers' bye/waiting), and the events and
-- code manifests it dropped because its queue was full.
ALTER TABLE {database}.agent_heartbeats
    ADD COLUMN IF NOT EXISTS rank_events UInt64 AFTER claim_conflicts,
    ADD COLUMN IF NOT EXISTS rank_events_dropped UInt64 AFTER rank_events,
    ADD COLUMN IF NOT EXISTS manifests_dropped UInt64 AFTER rank_events_dropped;
