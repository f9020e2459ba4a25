"""The store contract every backend fulfils: commands, queries, JSONEachRow and Arrow inserts.

SQL handed to :meth:`Store.command` and :meth:`Store.query` may name the store's
database with the literal token ``{database}``; only that token is replaced (never
``str.format``, since ClickHouse SQL is full of braces). Both backends receive inserts
as the same JSONEachRow bytes, encoded with msgspec, so a row means the same thing on
the embedded engine and on a server. The bulk (sample and step batches) goes as Arrow
tables instead (:meth:`Store.insert_arrow`, built by
:mod:`trainguard.pipeline.sinks.columns`), also the same on both backends.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import msgspec

from trainguard.errors import StoreError
from trainguard.pipeline.store.errors import StoreDataError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "DATABASE_TOKEN",
    "INSERT_SETTINGS",
    "QueryResult",
    "Store",
    "decode_json_compact",
    "encode_json_each_row",
]

#: The one placeholder substituted in SQL: the store's database name.
DATABASE_TOKEN = "{database}"
#: Settings every insert runs with: ISO-8601 strings and epoch floats both parse; the
#: worker batches its own inserts, so ClickHouse's async-insert buffer would only add a
#: wait (it is on by default in recent versions); JSON intake lines (``insert_json_lines``)
#: carry a ``kind`` field and nested ``kind``/``schema_version`` keys that the ``*_in``
#: tables do not store. ``optimize_on_insert`` off: ClickHouse would otherwise collapse
#: the duplicate keys of a ReplacingMergeTree insert within the block itself, one more
#: sort-and-merge pass over every insert (40 % of the embedded engine's insert work for the
#: intake tables, BENCHMARKS.md issue #17 round 6). A copy within one insert is as
#: possible as one across two (a replayed batch), which only the merges and ``FINAL``
#: collapse, so every reader already reads through copies; the stored values are the same.
INSERT_SETTINGS: dict[str, str] = {
    "optimize_on_insert": "0",
    "date_time_input_format": "best_effort",
    "async_insert": "0",
    "input_format_skip_unknown_fields": "1",
    "input_format_json_ignore_unknown_keys_in_named_tuple": "1",
}

_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of one query, with JSON-compatible values."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def scalar(self) -> Any:
        """Return the first column of the first row; raise StoreError if there is none."""
        if not self.rows or not self.rows[0]:
            raise StoreError(f"expected one value, got {len(self.rows)} rows of {self.columns}")
        return self.rows[0][0]

    def dicts(self) -> list[dict[str, Any]]:
        """Return the rows as ``{column: value}`` dicts."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Store(ABC):
    """A ClickHouse database: embedded (chdb) or a server, behind one small interface."""

    database: str

    def render(self, sql: str) -> str:
        """Replace the literal ``{database}`` token in ``sql`` with this store's database."""
        return sql.replace(DATABASE_TOKEN, self.database)

    @abstractmethod
    def command(self, sql: str) -> None:
        """Run one statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE)."""

    @abstractmethod
    def query(self, sql: str) -> QueryResult:
        """Run one read statement and return all its rows."""

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` into ``{database}.{table}`` as one JSONEachRow block."""
        if not rows:
            return
        if not _COLUMN.fullmatch(table):
            raise StoreError(f"invalid table name {table!r}; expected a plain identifier")
        columns, body = encode_json_each_row(rows)
        self._insert_block(table, columns, body)

    def insert_json_lines(self, table: str, lines: Sequence[bytes]) -> None:
        """Insert ready JSONEachRow ``lines`` (one object each) into ``{database}.{table}``.

        The lines are already JSON (e.g. for the ``*_in`` intake tables of ``schemas/sql``),
        so nothing is re-encoded here.
        """
        if not lines:
            return
        if not _COLUMN.fullmatch(table):
            raise StoreError(f"invalid table name {table!r}; expected a plain identifier")
        self._insert_block(table, None, b"\n".join(lines))

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Insert the columns of ``data`` (named as the table's) into ``{database}.{table}``.

        Columns the table has and ``data`` lacks take their defaults (``ingested_at``).
        """
        if data.num_rows == 0:
            return
        if not _COLUMN.fullmatch(table):
            raise StoreError(f"invalid table name {table!r}; expected a plain identifier")
        for name in data.column_names:
            if not _COLUMN.fullmatch(name):
                raise StoreDataError(f"invalid column name {name!r}; expected a plain identifier")
        self._insert_arrow(table, data)

    def _insert_arrow(self, table: str, data: pa.Table) -> None:
        """Send one Arrow block; its table and column names are validated identifiers."""
        raise StoreError(f"{type(self).__name__} takes no Arrow inserts (table {table!r})")

    @abstractmethod
    def _insert_block(self, table: str, columns: list[str] | None, body: bytes) -> None:
        """Send one JSONEachRow block; ``columns`` are validated identifiers (None: all)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; further calls are undefined."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def encode_json_each_row(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], bytes]:
    """Return the union of the rows' keys (first-seen order) and the rows as JSONEachRow."""
    columns: dict[str, None] = {}
    plain: list[Mapping[str, Any]] = []
    for row in rows:
        plain.append(row if isinstance(row, dict) else dict(row))
        for key in row:
            if key not in columns:
                if not _COLUMN.fullmatch(key):
                    raise StoreDataError(
                        f"invalid column name {key!r}; expected a plain identifier")
                columns[key] = None
    try:
        body = _ENCODER.encode_lines(plain)
    except (TypeError, msgspec.EncodeError) as exc:
        raise StoreDataError(f"cannot encode row as JSON: {exc}") from None
    return list(columns), body


def decode_json_compact(data: bytes, sql: str) -> QueryResult:
    """Decode a ClickHouse ``JSONCompact`` document into a :class:`QueryResult`."""
    if not data.strip():
        return QueryResult(columns=[], rows=[])
    try:
        doc = msgspec.json.decode(data)
        columns = [str(col["name"]) for col in doc["meta"]]
        rows = [tuple(row) for row in doc["data"]]
    except (msgspec.DecodeError, KeyError, TypeError):
        raise StoreError(
            f"query did not return JSONCompact (drop any FORMAT clause): {sql[:200]!r}"
        ) from None
    return QueryResult(columns=columns, rows=rows)


def require_table(store: Store, table: str) -> None:
    """Raise a clear :class:`StoreError` when ``table`` is missing (an unmigrated store)."""
    if not int(store.query(f"EXISTS TABLE {{database}}.{table}").scalar()):
        raise StoreError(
            f"store database {store.database!r} has no {table} table; "
            "run `trainguard db migrate` (the worker does on start)"
        )
