"""The embedded backend: ClickHouse in-process through chdb, owning one local directory.

chdb runs one engine per process, bound to one directory for the life of the process,
and locks that directory against other processes. So this module keeps one connection
per directory in a reference-counted registry: every :class:`ChdbStore` on the same
path shares it, and one lock per connection serializes calls from worker threads.
Arrow tables reach the engine as files (:mod:`~trainguard.pipeline.store.arrow_files`),
which it reads without taking the GIL.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import chdb

from trainguard.errors import StoreError
from trainguard.pipeline.store.arrow_files import ArrowFiles, BlockWriteError, block_dir
from trainguard.pipeline.store.base import INSERT_SETTINGS, QueryResult, Store, decode_json_compact
from trainguard.pipeline.store.errors import StoreDataError, is_data_error
from trainguard.pipeline.store.sqltext import split_statements
from trainguard.pipeline.store.url import validate_identifier

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ChdbStore", "OWNER_FILE", "owner_pid"]

log = logging.getLogger(__name__)

#: File in a chdb directory naming the process that owns it (written by ``serve_reads``).
OWNER_FILE = "owner.json"

# The engine raises its own ChdbError (chdb._exceptions), which is *not* chdb.ChdbError,
# and connect() raises a plain RuntimeError; catch all three.
_ENGINE_ERROR: type[Exception] = getattr(
    getattr(chdb, "_exceptions", None), "ChdbError", RuntimeError
)
_CHDB_ERRORS: tuple[type[Exception], ...] = (_ENGINE_ERROR, chdb.ChdbError, RuntimeError)
_SETTINGS_SQL = ", ".join(f"{k}='{v}'" for k, v in INSERT_SETTINGS.items())


#: chdb's streaming insert (``send_insert``) swallows an error thrown while the parts are
#: written (seen: "Too many partitions for single INSERT block"): it returns as if the
#: rows were stored, and none are. Its ``rows_written`` counts the rows read either way, so
#: it cannot tell. The plain query path raises every error, so every insert takes it: JSON
#: rows inline after ``FORMAT JSONEachRow``, Arrow tables as an Arrow IPC file through the
#: ``file()`` table function, or (where no block directory can be had) through the
#: ``Python()`` table function, which reads the table in place but takes the GIL to.
_ARROW_NAME = "_tg_arrow_block"
#: An Arrow block's insert settings: those of every insert that concern it (see
#: ``INSERT_SETTINGS``).
_ARROW_SETTINGS = f"optimize_on_insert={INSERT_SETTINGS['optimize_on_insert']}"
#: A block file's schema is read from the file itself each time, never from ClickHouse's
#: cache of inferred schemas (keyed by path and modification time).
_FILE_SETTINGS = f"schema_inference_use_cache_for_file=0, {_ARROW_SETTINGS}"


@dataclass
class _Shared:
    """One chdb connection and the lock and reference count of its users."""

    conn: Any
    #: Where Arrow blocks are written for ``file()``; ``None``: through ``Python()``.
    files: ArrowFiles | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    refs: int = 0


_registry: dict[Path, _Shared] = {}
_registry_lock = threading.Lock()
# chdb cannot switch directories once its engine started, even after close().
_engine_path: Path | None = None


def owner_pid(path: Path) -> int | None:
    """Return the pid that owns chdb directory ``path``, from owner.json or chdb's status."""
    try:
        pid = json.loads((path / OWNER_FILE).read_text()).get("pid")
        if isinstance(pid, int):
            return pid
    except (OSError, ValueError, AttributeError):
        pass
    try:
        for line in (path / "status").read_text().splitlines():
            if line.startswith("PID:"):
                return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def _locked_by_other(path: Path) -> bool:
    """Tell whether chdb's ``status`` file in ``path`` is flock-ed by a live engine."""
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _owned_error(path: Path) -> StoreError:
    pid = owner_pid(path)
    who = f" (pid {pid})" if pid is not None else ""
    return StoreError(
        f"embedded store {path} is already open in another process{who}; only one process "
        "may own a chdb directory — stop it, or read through it with `trainguard db query`, "
        "or use a ClickHouse server"
    )


def _connect(path: Path) -> Any:
    global _engine_path
    if _engine_path is not None and _engine_path != path:
        raise StoreError(
            f"cannot open embedded store {path}: this process already opened {_engine_path}, "
            "and chdb allows one directory per process"
        )
    path.mkdir(parents=True, exist_ok=True)
    try:
        conn = chdb.connect(str(path))
    except _CHDB_ERRORS as exc:
        text = str(exc)
        if "Cannot lock file" in text or "Another server instance" in text:
            raise _owned_error(path) from None
        if "EmbeddedServer" in text and _locked_by_other(path):
            raise _owned_error(path) from None
        raise StoreError(f"cannot open embedded store {path}: {text}") from None
    _engine_path = path
    return conn


def _arrow_files() -> ArrowFiles | None:
    base = block_dir()
    if base is None:
        log.warning("no plain directory for Arrow blocks (temp dir %s): Arrow inserts go "
                    "through Python(), which holds the GIL", tempfile.gettempdir())
        return None
    return ArrowFiles(base)


class ChdbStore(Store):
    """A :class:`Store` on an embedded chdb directory; creates its database on open."""

    def __init__(self, path: Path, database: str) -> None:
        self.path = path.expanduser().resolve()
        self.database = validate_identifier(database)
        with _registry_lock:
            shared = _registry.get(self.path)
            if shared is None:
                shared = _Shared(conn=_connect(self.path), files=_arrow_files())
                _registry[self.path] = shared
                log.info("opened embedded store path=%s", self.path)
            shared.refs += 1
        self._shared: _Shared | None = shared
        try:
            self._run(f"CREATE DATABASE IF NOT EXISTS {self.database}", "CSV")
        except StoreError:
            self.close()
            raise

    def _run(self, sql: str, fmt: str) -> bytes:
        shared = self._shared
        if shared is None:
            raise StoreError(f"embedded store {self.path} is closed")
        with shared.lock:
            try:
                result = shared.conn.query(sql, fmt)
            except _CHDB_ERRORS as exc:
                raise StoreError(f"{exc} (sql: {sql[:200]!r})") from None
        data: bytes = result.bytes() if result is not None else b""
        return data

    def _single(self, sql: str) -> str:
        # chdb runs every statement of "a; b" (a server refuses): keep both backends alike.
        rendered = self.render(sql)
        count = len(split_statements(rendered))
        if count > 1:
            raise StoreError(f"one statement per call, got {count}: {rendered[:200]!r}")
        return rendered

    def command(self, sql: str) -> None:
        """Run one statement, discarding any output."""
        self._run(self._single(sql), "CSV")

    def query(self, sql: str) -> QueryResult:
        """Run one read statement and return its rows as JSON-compatible values."""
        rendered = self._single(sql)
        return decode_json_compact(self._run(rendered, "JSONCompact"), rendered)

    def _insert_block(self, table: str, columns: list[str] | None, body: bytes) -> None:
        cols = " (" + ", ".join(f"`{c}`" for c in columns) + ")" if columns else ""
        sql = f"INSERT INTO {self.database}.{table}{cols} SETTINGS {_SETTINGS_SQL}"
        self._insert(sql, sql + " FORMAT JSONEachRow\n" + body.decode())

    def _insert_arrow(self, table: str, data: pa.Table) -> None:
        cols = ", ".join(f"`{c}`" for c in data.column_names)
        into = f"INSERT INTO {self.database}.{table} ({cols}) SELECT * FROM"
        files = self._shared.files if self._shared is not None else None
        if files is not None:
            try:
                with files.block(data) as path:  # a plain path: see arrow_files.block_dir
                    sql = f"{into} file('{path}', 'ArrowStream') SETTINGS {_FILE_SETTINGS}"
                    self._insert(sql, sql)
                return
            except BlockWriteError as exc:  # e.g. /dev/shm full: this block via Python()
                files.failures += 1
                if files.failures % 1000 == 1:
                    log.warning("%s; inserting through Python() (failures=%d)", exc,
                                files.failures)
        sql = f"{into} Python({_ARROW_NAME}) SETTINGS {_ARROW_SETTINGS}"
        # Python() finds the table by its name among the calling frames' variables.
        _tg_arrow_block = data  # noqa: F841
        self._insert(sql, sql)

    def _insert(self, sql: str, statement: str) -> None:
        """Run one INSERT (``statement``; ``sql`` is what an error quotes)."""
        shared = self._shared
        if shared is None:
            raise StoreError(f"embedded store {self.path} is closed")
        with shared.lock:
            try:
                shared.conn.query(statement, "CSV")
            except _CHDB_ERRORS as exc:
                error = StoreDataError if is_data_error(str(exc)) else StoreError
                raise error(f"{exc} (sql: {sql[:200]!r})") from None

    def close(self) -> None:
        """Drop this store's reference; the connection closes with the last one."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        with _registry_lock:
            shared.refs -= 1
            if shared.refs == 0:
                _registry.pop(self.path, None)
                with shared.lock:
                    shared.conn.close()
                if shared.files is not None:
                    shared.files.close()
                log.info("closed embedded store path=%s", self.path)

    def __repr__(self) -> str:
        return f"ChdbStore(path={str(self.path)!r}, database={self.database!r})"
