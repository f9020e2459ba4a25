-- Issue 16 (change audit). Sanctioned changes of a job's code/env or seed fingerprint:
-- `trainguard change approve --job J --fingerprint F --reason R` writes one row; the alert
-- lifecycle turns a `code_changed` (or seed `restart_divergence`) finding whose evidence
-- fingerprint is approved for its job into severity info, also after it paged.
-- Every change is a new version of the same approval_id (revoking one is inserting it
-- again with revoked = 1); the latest updated_at wins on merge, readers use FINAL.
-- created_by / updated_by: the operating-system user the CLI ran as (as for silences).
-- Written by operators only: workers may not insert here (infra/clickhouse/grants.sql),
-- or a compromised worker could approve the code it changed.
CREATE TABLE IF NOT EXISTS {database}.change_approvals
(
    approval_id String,
    job_id      LowCardinality(String),
    fingerprint String,
    reason      String,
    revoked     UInt8 DEFAULT 0,
    created_by  String,
    updated_by  String,
    created_at  DateTime64(3, 'UTC'),
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY approval_id;
