-- Issue 6 (pages): a finding whose culprits pass their checks again is re-emitted once
-- with cleared_at set (same finding_id, so this row replaces the open one), and alerts
-- resolve on it instead of waiting for a quiet period. NULL: still open.
ALTER TABLE {database}.findings
    ADD COLUMN IF NOT EXISTS cleared_at Nullable(DateTime64(3, 'UTC')) AFTER last_seen;
