-- Least privilege on a ClickHouse server (issue 14, item 6): one user per kind of client.
--
-- Rendered and applied by `trainguard db grants` (--print shows it, --apply runs it as a
-- user with ACCESS MANAGEMENT and every privilege it grants, e.g. the server's `default`
-- with access_management enabled). Placeholders:
--   {database}  the store's database          {prefix}  user and role names (trainguard)
--   {<account>_sha256} / {<account>_salt}     SHA-256 of password+salt, and the salt, per
--                                             account: admin, worker, ro, operator.
-- No password is in this file, nor in what `db grants` renders: only salted hashes, from
-- passwords read from files or the environment (never from the command line).
-- Needs ClickHouse 23.8 or later (SQL access control, SALT, CHANGEABLE_IN_READONLY).
-- Re-applying is safe: roles are rebuilt, users replaced (their passwords are reset).
--
-- Who may do what:
--   {prefix}_admin     everything on {database}: runs `trainguard db migrate`. Nothing else
--                      needs DDL: workers only migrate when they are allowed to, and check
--                      at start that the store is up to date otherwise.
--   {prefix}_worker    SELECT and INSERT on {database}.*, except INSERT into silences and
--                      change_approvals (a worker that could write them could mute
--                      integrity pages) and schema_migrations. No ALTER, DELETE, DROP, TRUNCATE or OPTIMIZE.
--   {prefix}_ro        SELECT on {database}.*, readonly = 1 (Grafana, reports, `alerts`);
--                      max_execution_time stays changeable: Grafana's plugin sets it.
--   {prefix}_operator  SELECT on {database}.* and INSERT into silences and change_approvals
--                      only (`trainguard silence add|expire`, `trainguard change
--                      approve|revoke`; each inserts a new version of a row).

-- Roles: what each kind of client may do.
CREATE ROLE IF NOT EXISTS {prefix}_admin_role;
REVOKE ALL ON *.* FROM {prefix}_admin_role;
GRANT ALL ON {database}.* TO {prefix}_admin_role;

CREATE ROLE IF NOT EXISTS {prefix}_worker_role;
REVOKE ALL ON *.* FROM {prefix}_worker_role;
GRANT SELECT, INSERT ON {database}.* TO {prefix}_worker_role;
REVOKE INSERT ON {database}.silences FROM {prefix}_worker_role;
REVOKE INSERT ON {database}.change_approvals FROM {prefix}_worker_role;
REVOKE INSERT ON {database}.schema_migrations FROM {prefix}_worker_role;

CREATE ROLE IF NOT EXISTS {prefix}_ro_role;
REVOKE ALL ON *.* FROM {prefix}_ro_role;
GRANT SELECT ON {database}.* TO {prefix}_ro_role;

CREATE ROLE IF NOT EXISTS {prefix}_operator_role;
REVOKE ALL ON *.* FROM {prefix}_operator_role;
GRANT SELECT ON {database}.* TO {prefix}_operator_role;
GRANT INSERT ON {database}.silences TO {prefix}_operator_role;
GRANT INSERT ON {database}.change_approvals TO {prefix}_operator_role;

-- Read-only settings: readonly = 1 refuses every write and every SET, except the query
-- timeout that Grafana's ClickHouse plugin sets on each query.
CREATE SETTINGS PROFILE OR REPLACE {prefix}_ro_profile
    SETTINGS readonly = 1, max_execution_time = 60 MIN 1 MAX 600 CHANGEABLE_IN_READONLY;

-- Users: one per kind of client, each with its role (roles granted are default roles).
CREATE USER OR REPLACE {prefix}_admin
    IDENTIFIED WITH sha256_hash BY '{admin_sha256}' SALT '{admin_salt}'
    DEFAULT DATABASE {database};
GRANT {prefix}_admin_role TO {prefix}_admin;

CREATE USER OR REPLACE {prefix}_worker
    IDENTIFIED WITH sha256_hash BY '{worker_sha256}' SALT '{worker_salt}'
    DEFAULT DATABASE {database};
GRANT {prefix}_worker_role TO {prefix}_worker;

CREATE USER OR REPLACE {prefix}_ro
    IDENTIFIED WITH sha256_hash BY '{ro_sha256}' SALT '{ro_salt}'
    DEFAULT DATABASE {database}
    SETTINGS PROFILE '{prefix}_ro_profile';
GRANT {prefix}_ro_role TO {prefix}_ro;

CREATE USER OR REPLACE {prefix}_operator
    IDENTIFIED WITH sha256_hash BY '{operator_sha256}' SALT '{operator_salt}'
    DEFAULT DATABASE {database};
GRANT {prefix}_operator_role TO {prefix}_operator;
