"""The ClickHouse store: one interface over embedded chdb and a ClickHouse server.

Open it with :func:`open_store` from a :class:`StoreUrl`; create the tables with
:func:`migrate`; let other processes read an embedded store that a worker owns with
:func:`serve_reads` (the worker) and ``open_store(url, read_only=True)`` (the reader).
"""

from trainguard.pipeline.store.base import QueryResult, Store
from trainguard.pipeline.store.chdb_store import ChdbStore
from trainguard.pipeline.store.factory import open_store, owner_reader
from trainguard.pipeline.store.migrate import default_sql_dir, migrate, row_counts, tables
from trainguard.pipeline.store.owner import (
    OwnerInfo,
    ReadServer,
    RemoteReadStore,
    read_owner,
    serve_reads,
)
from trainguard.pipeline.store.url import Secret, StoreUrl

__all__ = [
    "ChdbStore",
    "OwnerInfo",
    "QueryResult",
    "ReadServer",
    "RemoteReadStore",
    "Secret",
    "Store",
    "StoreUrl",
    "default_sql_dir",
    "migrate",
    "open_store",
    "owner_reader",
    "read_owner",
    "row_counts",
    "serve_reads",
    "tables",
]
