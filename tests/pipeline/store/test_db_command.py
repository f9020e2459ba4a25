"""``trainguard db``: lives here because it needs this process's one chdb directory."""

import argparse

import pytest

from trainguard.cli import db
from trainguard.errors import StoreError
from trainguard.pipeline.store import default_sql_dir


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="trainguard")
    db.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


@pytest.fixture
def store_url(chdb_store):
    return f"chdb://{chdb_store.path}?database={chdb_store.database}"


def test_db_migrate_then_counts_prints_every_table(store_url, capsys):
    assert _run("db", "migrate", "--store", store_url) == 0
    n = len(list(default_sql_dir().glob("*.sql")))
    assert f"applied {n} migration(s)" in capsys.readouterr().out
    assert _run("db", "migrate", "--store", store_url) == 0
    assert "is up to date" in capsys.readouterr().out
    assert _run("db", "counts", "--store", store_url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["table", "rows"]
    assert lines[1].split() == ["agent_heartbeats", "0"]
    assert len(lines) == 1 + len(list(_tables_in_ddl()))


def test_db_query_prints_an_aligned_table(store_url, capsys):
    sql = "SELECT number AS n, toString(number * 100) AS s FROM numbers(3)"
    assert _run("db", "query", "--store", store_url, sql) == 0
    assert capsys.readouterr().out.splitlines() == [
        "n  s",
        "0  0",
        "1  100",
        "2  200",
        "(3 rows)",
    ]


def test_db_query_bad_sql_raises_store_error(store_url):
    with pytest.raises(StoreError, match="UNKNOWN_TABLE"):
        _run("db", "query", "--store", store_url, "SELECT * FROM {database}.nope")


def test_format_table_right_aligns_numbers_and_shows_null():
    text = db.format_table(["name", "v"], [("a", 1), ("bbb", None), ("c", 100)])
    assert text.splitlines() == ["name  v", "a     1", "bbb   NULL", "c     100"]


def test_db_query_refuses_write_statements_even_without_an_owner(store_url, chdb_store):
    with pytest.raises(StoreError, match="db query runs read statements only"):
        _run("db", "query", "--store", store_url, "DROP DATABASE {database}")
    assert chdb_store.query("EXISTS DATABASE {database}").scalar() == 1


def _tables_in_ddl():
    import re

    # Null-engine intake tables store nothing and are not counted.
    for path in default_sql_dir().glob("*.sql"):
        for name in re.findall(r"CREATE TABLE IF NOT EXISTS \{database\}\.(\w+)", path.read_text()):
            if not name.endswith("_in"):
                yield name
