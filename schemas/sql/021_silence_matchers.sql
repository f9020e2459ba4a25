-- Issue 18 (alert routing). Silences narrowed by amtool-like matchers
-- (`trainguard silence add --check gpu_throttled --node node-07`, `rank!=0`,
-- `check=~"rank_.*"`): a JSON list of [name, op, value], all of which must hold.
-- '' (rows from before, and silences without matchers): none, job_id/node as before.
-- A silence with matchers keeps its job and node among them and '' in job_id/node, so a
-- worker from before this migration refuses the row (neither job nor node) and keeps
-- the silences it had, instead of muting all of node-07 for `check=... node=node-07`.
-- Numbered 021: 019 and 020 are taken by parallel branches (rank events).
ALTER TABLE {database}.silences ADD COLUMN IF NOT EXISTS matchers String DEFAULT '' AFTER node;
