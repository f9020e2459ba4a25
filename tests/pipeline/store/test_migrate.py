import shutil
import time

import pytest

from trainguard.errors import StoreError
from trainguard.pipeline.store import migrate, row_counts, tables
from trainguard.pipeline.store.migrate import default_sql_dir

ALL_TABLES = [
    "agent_heartbeats", "alert_deliveries", "alerts", "anomalies", "baselines",
    "change_approvals", "checkpoints",
    "dead_letters", "findings", "gpu_samples", "gpu_samples_1m", "pipeline_health",
    "rank_events", "sample_batches", "silences", "steps", "steps_1m", "witness",
]


def test_migrate_creates_every_table_in_name_order(chdb_store):
    applied = migrate(chdb_store)
    assert applied == sorted(p.name for p in default_sql_dir().glob("*.sql"))
    assert tables(chdb_store) == ALL_TABLES


def test_migrate_is_idempotent(chdb_store):
    migrate(chdb_store)
    assert migrate(chdb_store) == []


def test_a_new_migration_is_applied_alone(chdb_store, tmp_path):
    (tmp_path / "001_a.sql").write_text(
        "-- first\n"
        "CREATE TABLE IF NOT EXISTS {database}.a (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
    )
    assert migrate(chdb_store, tmp_path) == ["001_a.sql"]
    (tmp_path / "002_b.sql").write_text(
        "CREATE TABLE {database}.b (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "-- a comment-only chunk\n;\n"
        "INSERT INTO {database}.b VALUES (1), (2);\n"
    )
    assert migrate(chdb_store, tmp_path) == ["002_b.sql"]
    assert row_counts(chdb_store) == {"a": 0, "b": 2}


def test_a_migration_changed_after_it_was_applied_is_refused(chdb_store, tmp_path):
    sql = tmp_path / "003_steps.sql"
    sql.write_text("CREATE TABLE IF NOT EXISTS {database}.s (x UInt8) ENGINE = Memory")
    migrate(chdb_store, tmp_path)
    sql.write_text("CREATE TABLE IF NOT EXISTS {database}.s (x UInt16) ENGINE = Memory")
    with pytest.raises(
        StoreError,
        match=r"migration 003_steps.sql was changed after it was applied \(checksum .*\); "
              "add a new migration instead",
    ):
        migrate(chdb_store, tmp_path)


def test_an_empty_migrations_directory_is_an_error(chdb_store, tmp_path):
    with pytest.raises(StoreError, match="no migrations"):
        migrate(chdb_store, tmp_path)


def test_row_counts_deduplicate_replacing_tables_unless_raw(chdb_store):
    migrate(chdb_store)
    chdb_store.command("SYSTEM STOP MERGES {database}.steps")  # keep both parts until FINAL
    step = {"cluster": "c", "job_id": "j", "step": 1, "rank": 0, "world_size": 1, "node": "n",
            "ts": 1700000000.0, "loss": 2.5, "param_checksum": "", "env_fingerprint": ""}
    chdb_store.insert_rows("steps", [step])
    chdb_store.insert_rows("steps", [step])
    counts = row_counts(chdb_store)
    assert counts == {name: (1 if name == "steps" else 0) for name in ALL_TABLES}
    assert row_counts(chdb_store, final=False)["steps"] == 2


def test_a_rerun_step_after_a_restart_keeps_both_rows_and_the_rollup_still_fires(chdb_store):
    migrate(chdb_store)
    now = time.time()  # recent: the rollups' TTL counts from event time
    step = {"cluster": "c", "job_id": "j", "step": 7, "rank": 0, "world_size": 1, "node": "n",
            "ts": now - 100, "loss": 2.5}
    rerun = {**step, "ts": now, "loss": 2.4}  # the same step, after a restart
    chdb_store.insert_rows("steps", [step, rerun, step])  # and a replayed duplicate
    assert row_counts(chdb_store)["steps"] == 2
    assert chdb_store.query("SELECT count() FROM {database}.steps_1m").scalar() >= 1
    sql = ("SELECT sorting_key FROM system.tables WHERE database = '{database}' "
           "AND name = 'steps'")
    assert chdb_store.query(sql).scalar() == "job_id, step, rank, ts"


class _NoSchemaRights:
    """A store user without DDL rights (the worker's on a server): reads and inserts only."""

    def __init__(self, inner):
        self.inner, self.database, self.commands = inner, inner.database, []

    def command(self, sql):
        self.commands.append(sql)
        raise StoreError("ClickHouse at db:8123: Code: 497. DB::Exception: trainguard_worker: "
                         "Not enough privileges. (ACCESS_DENIED)")

    def query(self, sql):
        return self.inner.query(sql)

    def insert_rows(self, table, rows):
        self.inner.insert_rows(table, rows)


def test_an_up_to_date_store_is_migrated_without_any_ddl(chdb_store):
    migrate(chdb_store)
    worker = _NoSchemaRights(chdb_store)
    assert migrate(worker) == [] and worker.commands == []


def test_a_pending_migration_without_ddl_rights_says_who_may_migrate(chdb_store, tmp_path):
    with pytest.raises(StoreError, match=r"migration 001_sample_batches\.sql is pending but "
                                         r"this store user may not change the schema; run "
                                         r"`trainguard db migrate"):
        migrate(_NoSchemaRights(chdb_store))
    for path in sorted(default_sql_dir().glob("*.sql"))[:2]:
        shutil.copy(path, tmp_path / path.name)
    migrate(chdb_store, tmp_path)
    with pytest.raises(StoreError, match=r"migration 003_steps\.sql is pending.*ACCESS_DENIED"):
        migrate(_NoSchemaRights(chdb_store))
