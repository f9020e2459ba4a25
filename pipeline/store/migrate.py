"""Apply the DDL in ``schemas/sql/NNN_name.sql`` once each, in name order.

Applied files are recorded in ``{database}.schema_migrations`` with a SHA-256 of their
text. A file already applied is skipped; one whose text changed afterwards stops the
migration, because editing history would leave stores built before and after the edit
with different schemas. Statements use ``CREATE ... IF NOT EXISTS``, so a run that
dies between a statement and its record is safely repeated.

A store that is up to date gets no DDL at all, so a server user without DDL rights (the
worker's, see ``infra/clickhouse/grants.sql``) passes; one with migrations pending gets a
:class:`StoreError` saying to run ``trainguard db migrate`` as the admin user.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path

from trainguard import schemas
from trainguard.errors import StoreError
from trainguard.pipeline.store.base import Store
from trainguard.pipeline.store.sqltext import split_statements

__all__ = ["MIGRATIONS_TABLE", "default_sql_dir", "migrate", "row_counts", "tables"]

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"

_CREATE_MIGRATIONS = (
    f"CREATE TABLE IF NOT EXISTS {{database}}.{MIGRATIONS_TABLE} "
    "(name String, checksum String, applied_at DateTime64(3, 'UTC')) "
    "ENGINE = MergeTree ORDER BY name"
)


def default_sql_dir() -> Path:
    """Return the directory of the DDL shipped with the ``schemas`` package."""
    return Path(schemas.__file__).parent / "sql"


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def migrate(store: Store, sql_dir: Path | None = None) -> list[str]:
    """Apply the not-yet-applied ``*.sql`` files of ``sql_dir``; return their names."""
    directory = sql_dir if sql_dir is not None else default_sql_dir()
    files = sorted(directory.glob("*.sql"), key=lambda p: p.name)
    if not files:
        raise StoreError(f"no migrations (*.sql) found in {directory}")
    if not _has_migrations_table(store):
        try:
            store.command(_CREATE_MIGRATIONS)
        except StoreError as exc:
            raise _explained(exc, files[0].name) from None
    applied = {
        str(name): str(checksum)
        for name, checksum in store.query(
            f"SELECT name, checksum FROM {{database}}.{MIGRATIONS_TABLE}"
        ).rows
    }
    done: list[str] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        checksum = _checksum(text)
        previous = applied.get(path.name)
        if previous is not None:
            if previous != checksum:
                raise StoreError(
                    f"migration {path.name} was changed after it was applied (checksum "
                    f"{previous[:12]} in {store.database}.{MIGRATIONS_TABLE}, {checksum[:12]} "
                    "on disk); add a new migration instead"
                )
            continue
        for statement in split_statements(text):
            try:
                store.command(statement)
            except StoreError as exc:
                raise _explained(exc, path.name) from None
        store.insert_rows(
            MIGRATIONS_TABLE,
            [
                {
                    "name": path.name,
                    "checksum": checksum,
                    "applied_at": datetime.now(UTC).timestamp(),
                }
            ],
        )
        log.info("applied migration name=%s database=%s", path.name, store.database)
        done.append(path.name)
    return done


def _has_migrations_table(store: Store) -> bool:
    found = store.query(
        "SELECT count() FROM system.tables WHERE database = '{database}' "
        f"AND name = '{MIGRATIONS_TABLE}'"
    ).scalar()
    return int(found) > 0


def _explained(exc: StoreError, name: str) -> StoreError:
    """A refused migration statement; a missing privilege says who may migrate."""
    text = str(exc)
    if "ACCESS_DENIED" in text or "Not enough privileges" in text:
        return StoreError(
            f"migration {name} is pending but this store user may not change the schema; "
            "run `trainguard db migrate --store URL` as the admin user (see "
            f"infra/clickhouse/grants.sql), then start again: {text}"
        )
    return exc


def tables(store: Store) -> list[str]:
    """Return the tables of the store's database, by name.

    Left out: schema_migrations, views, and the Null-engine intake tables (they store nothing).
    """
    result = store.query(
        "SELECT name FROM system.tables WHERE database = '{database}' "
        f"AND name != '{MIGRATIONS_TABLE}' AND engine NOT LIKE '%View' AND engine != 'Null' "
        "ORDER BY name"
    )
    return [str(row[0]) for row in result.rows]


def row_counts(store: Store, final: bool = True) -> dict[str, int]:
    """Return ``{table: rows}``; with ``final``, ReplacingMergeTree tables count via FINAL."""
    result = store.query(
        "SELECT name, engine FROM system.tables WHERE database = '{database}' "
        f"AND name != '{MIGRATIONS_TABLE}' AND engine NOT LIKE '%View' AND engine != 'Null' "
        "ORDER BY name"
    )
    counts: dict[str, int] = {}
    for name, engine in result.rows:
        use_final = final and "Replacing" in str(engine)
        sql = f"SELECT count() FROM {{database}}.{name}{' FINAL' if use_final else ''}"
        counts[str(name)] = int(store.query(sql).scalar())
    return counts
