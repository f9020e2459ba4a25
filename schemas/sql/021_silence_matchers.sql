-- Issue 18 (alert routing). Silences narrowed by amtool-like matchers
-- (`trainguard silence add --check gpu_throttled --node node-07`, `rank!=0`,
-- `check=~"rank_.*"`): a JSON list of [name, op, value], all of which must hold,
-- besides job_id and node. '' (rows from before, and silences without matchers): none.
-- Numbered 021: 019 and 020 are taken by parallel branches (rank events).
ALTER TABLE {database}.silences ADD COLUMN IF NOT EXISTS matchers String DEFAULT '' AFTER node;
