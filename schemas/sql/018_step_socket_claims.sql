-- Issue 14 (the step socket knows who speaks): the agent's step socket datagrams refused
-- because another live process holds the (job, rank) they claim, and the distinct
-- claimants it reported (StepBatch.claims -> conflicting_report findings).
ALTER TABLE {database}.agent_heartbeats
    ADD COLUMN IF NOT EXISTS claims_refused UInt64 AFTER reporters_evicted,
    ADD COLUMN IF NOT EXISTS claim_conflicts UInt64 AFTER claims_refused;
