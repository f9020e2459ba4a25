"""The server backend: a ClickHouse server over HTTP(S) through clickhouse-connect.

Queries come back as ``JSONCompact`` (decoded with msgspec), the same as from the
embedded backend, so callers see identical value types on both: numbers and strings,
never driver-specific datetime or Decimal objects. Arrow tables (the bulk of sample and
step batches) go through the driver's native columnar ``insert_arrow``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from trainguard.errors import StoreError
from trainguard.pipeline.store.base import INSERT_SETTINGS, QueryResult, Store, decode_json_compact
from trainguard.pipeline.store.errors import StoreDataError, is_data_error
from trainguard.pipeline.store.url import StoreUrl

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ServerStore"]

log = logging.getLogger(__name__)


class ServerStore(Store):
    """A :class:`Store` on a ClickHouse server; creates its database if missing.

    ``client`` may be given (any clickhouse-connect client) for tests; by default one is
    built from ``url``.
    """

    def __init__(self, url: StoreUrl, *, client: Any | None = None) -> None:
        if url.embedded:
            raise StoreError(f"ServerStore needs an http(s):// URL, got {url}")
        self.url = url
        self.database = url.database
        self._where = f"{url.host}:{url.port}"
        if client is None:
            try:
                client = clickhouse_connect.get_client(
                    host=url.host,
                    port=url.port,
                    username=url.user,
                    password=url.password.reveal() if url.password is not None else "",
                    secure=url.secure,
                )
            except ClickHouseError as exc:
                raise self._error(exc, "connect") from None
        self._client: Any = client
        # Only when missing: users without DDL rights (worker, read-only, operator) may
        # not run CREATE DATABASE even with IF NOT EXISTS.
        if not self._database_exists():
            self.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._client.database = self.database
        log.info("opened server store url=%s", url)

    def _database_exists(self) -> bool:
        # system.databases lists only the databases this user has some grant on.
        found = self.query(f"SELECT count() FROM system.databases WHERE name = '{self.database}'")
        return int(found.scalar()) > 0

    def _error(self, exc: Exception, sql: str) -> StoreError:
        """Classify a driver error: unreachable, data refused (StoreDataError), or other."""
        if isinstance(exc, OperationalError):
            return StoreError(f"cannot reach ClickHouse at {self._where}: {exc}")
        text = f"ClickHouse at {self._where}: {exc} (sql: {sql[:200]!r})"
        if is_data_error(str(exc)):
            return StoreDataError(text)
        return StoreError(text)

    def command(self, sql: str) -> None:
        """Run one statement, discarding any output."""
        rendered = self.render(sql)
        try:
            self._client.command(rendered)
        except ClickHouseError as exc:
            raise self._error(exc, rendered) from None

    def query(self, sql: str) -> QueryResult:
        """Run one read statement and return its rows as JSON-compatible values."""
        # clickhouse-connect appends "FORMAT ..." on a new line: a trailing ';' would break it.
        rendered = self.render(sql).rstrip().rstrip(";")
        try:
            data: bytes = self._client.raw_query(rendered, fmt="JSONCompact")
        except ClickHouseError as exc:
            raise self._error(exc, rendered) from None
        return decode_json_compact(data, rendered)

    def _insert_block(self, table: str, columns: list[str] | None, body: bytes) -> None:
        target = f"{self.database}.{table}"
        try:
            self._client.raw_insert(
                target,
                columns,
                insert_block=body,
                settings=dict(INSERT_SETTINGS),
                fmt="JSONEachRow",
            )
        except ClickHouseError as exc:
            raise self._error(exc, f"INSERT INTO {target} FORMAT JSONEachRow") from None

    def _insert_arrow(self, table: str, data: pa.Table) -> None:
        # clickhouse-connect's native columnar insert: the table goes as one Arrow block.
        try:
            self._client.insert_arrow(table, data, database=self.database,
                                      settings=dict(INSERT_SETTINGS))
        except ClickHouseError as exc:
            raise self._error(exc, f"INSERT INTO {self.database}.{table} FORMAT Arrow") from None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"ServerStore(url={str(self.url)!r})"
