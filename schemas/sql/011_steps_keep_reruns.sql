-- A job restarted from a checkpoint runs the same step numbers again. Keyed by
-- (job_id, step, rank) alone, the re-run replaced the original rows on merge: the history
-- before the restart, the evidence of what happened, was lost. Keyed with ts, a re-run
-- keeps both, and an at-least-once replay of the same record (same ts) still collapses.
-- ORDER BY cannot be changed in place: copy into a new table and swap names. The views
-- into and out of `steps` follow the name. Repeatable: a run that died half-way starts
-- over from the first statement. Run it with the workers stopped (rows inserted during
-- the copy would stay behind in the dropped table).
DROP TABLE IF EXISTS {database}.steps_rekeyed;

CREATE TABLE {database}.steps_rekeyed AS {database}.steps
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (job_id, step, rank, ts)
TTL toDateTime(ingested_at) + INTERVAL 90 DAY;

INSERT INTO {database}.steps_rekeyed SELECT * FROM {database}.steps;

EXCHANGE TABLES {database}.steps AND {database}.steps_rekeyed;

DROP TABLE IF EXISTS {database}.steps_rekeyed;
