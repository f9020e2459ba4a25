"""``trainguard db migrate|counts|query|grants``: tables, row counts, a read query, users.

``counts`` and ``query`` open the store read-only, so on an embedded store that a worker
owns they read through the worker's loopback endpoint instead of failing on chdb's
directory lock. The store URL comes from ``--store`` or the environment; a server
password only from the environment. Errors are raised as
:class:`trainguard.errors.StoreError` / :class:`~trainguard.errors.ConfigError` for the
root CLI to print.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from trainguard.cli._common import add_json_flag, add_store, print_json, store_url
from trainguard.cli.grants import add_grants_parser
from trainguard.errors import StoreError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``db`` command and its ``migrate``/``counts``/``query`` subcommands."""
    db = subparsers.add_parser(
        "db", help="create, count and query the store's tables",
        description="Apply the schema migrations, count rows per table, run one read "
                    "query, or set up a server's least-privilege users (grants), against "
                    "the store (embedded chdb directory or ClickHouse server). "
                    "The server password is read from the environment only.")
    sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)

    store = argparse.ArgumentParser(add_help=False)
    add_store(store)

    p = sub.add_parser("migrate", parents=[store],
                       help="apply schemas/sql/*.sql not yet applied (needs write access)")
    p.set_defaults(func=_migrate)
    p = sub.add_parser("counts", parents=[store], help="rows per table (deduplicated: FINAL)")
    p.add_argument("--raw", action="store_true",
                   help="count stored rows without FINAL (replays not yet merged away)")
    add_json_flag(p, 'the counts ({"store", "final", "tables": {TABLE: ROWS}})')
    p.set_defaults(func=_counts)
    p = sub.add_parser("query", parents=[store],
                       help="run one read statement (SELECT, WITH, SHOW, DESCRIBE, EXISTS, "
                            "EXPLAIN); {database} names the store's database")
    p.add_argument("sql", metavar="SQL", help="e.g. 'SELECT count() FROM {database}.steps'")
    add_json_flag(p, 'the result ({"columns": [NAME...], "rows": [[VALUE...]...]})')
    p.set_defaults(func=_query)
    add_grants_parser(sub, store)


def _migrate(args: argparse.Namespace) -> int:
    from trainguard.pipeline.store import migrate, open_store

    url = store_url(args.store)
    with open_store(url) as store:
        applied = migrate(store)
    if applied:
        print(f"applied {len(applied)} migration(s) to {url}: {', '.join(applied)}")
    else:
        print(f"{url} is up to date")
    return 0


def _counts(args: argparse.Namespace) -> int:
    from trainguard.pipeline.store import open_store, row_counts

    url = store_url(args.store)
    with open_store(url, read_only=True) as store:
        counts = row_counts(store, final=not args.raw)
    if args.json:
        print_json({"store": str(url), "final": not args.raw, "tables": counts})
        return 0
    print(format_table(["table", "rows"], [(name, n) for name, n in counts.items()]))
    return 0


def _query(args: argparse.Namespace) -> int:
    from trainguard.pipeline.store import open_store
    from trainguard.pipeline.store.sqltext import read_only_violation

    refused = read_only_violation(args.sql)
    if refused is not None:
        raise StoreError(f"db query runs read statements only: {refused}")
    url = store_url(args.store)
    with open_store(url, read_only=True) as store:
        result = store.query(args.sql)
    if args.json:
        print_json({"columns": result.columns, "rows": result.rows})
        return 0
    if result.columns:
        print(format_table(result.columns, result.rows))
        print(f"({len(result.rows)} row{'' if len(result.rows) == 1 else 's'})")
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value).replace("\t", "\\t").replace("\n", "\\n")


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render rows as left-aligned columns (numbers right-aligned), header first."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        for i in range(len(columns))
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(columns))] + [line(r) for r in cells])
