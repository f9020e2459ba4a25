-- Issue 14 (least privilege, accountable silences). A silence mutes integrity findings
-- only when `integrity` is 1, and then only with a reason, a creator and an end at most
-- max_integrity_silence_s (24 h) after its start: `trainguard silence add --integrity`
-- refuses anything else, and workers ignore (log and count) a row that breaks the rule.
-- Silences stored before this migration get 0: they keep muting the other categories
-- and no longer mute integrity findings.
-- updated_by: the operating-system user who wrote this version (the creator, or who
-- expired it); rows from before this migration take their created_by.
ALTER TABLE {database}.silences ADD COLUMN IF NOT EXISTS integrity UInt8 DEFAULT 0 AFTER node;
ALTER TABLE {database}.silences ADD COLUMN IF NOT EXISTS updated_by String DEFAULT created_by AFTER created_by;
