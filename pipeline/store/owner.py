"""Reads through the process that owns an embedded (chdb) store directory.

chdb locks its directory to one process, so while a worker owns it, ``trainguard db
query`` cannot open it. The owner therefore calls :func:`serve_reads`: a small HTTP
endpoint on 127.0.0.1 that runs single read statements on the owner's connection.
It advertises itself in ``DATA_DIR/owner.json`` (pid, url, started_at and a random
token; the file is private to the owner's user, and the token is required on every
request), and :class:`RemoteReadStore` is the client side of it.

The read-only check (one statement, first keyword SELECT/WITH/SHOW/DESCRIBE/DESC/
EXISTS/EXPLAIN, no INTO OUTFILE) guards against mistakes, not against the owner's user.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec

from trainguard.errors import StoreError
from trainguard.pipeline.store.base import QueryResult, Store
from trainguard.pipeline.store.chdb_store import OWNER_FILE
from trainguard.pipeline.store.sqltext import read_only_violation
from trainguard.pipeline.store.url import validate_identifier

__all__ = [
    "OPERATOR_TABLES", "OwnerInfo", "ReadServer", "RemoteReadStore", "read_owner", "serve_reads",
]

#: Tables an operator writes while a worker owns the embedded store (through its endpoint).
OPERATOR_TABLES = frozenset({"silences", "change_approvals"})

log = logging.getLogger(__name__)

_MAX_BODY = 1 << 20


class OwnerInfo(msgspec.Struct, frozen=True):
    """The content of ``owner.json``: who owns a chdb directory and where it serves reads."""

    pid: int
    url: str
    started_at: str
    token: str = ""


def read_owner(data_dir: Path) -> OwnerInfo | None:
    """Return ``data_dir``'s owner.json, or None if it is missing or unreadable."""
    try:
        return msgspec.json.decode((data_dir / OWNER_FILE).read_bytes(), type=OwnerInfo)
    except (OSError, msgspec.DecodeError):
        return None


def _handler(store: Store, token: str) -> type[BaseHTTPRequestHandler]:
    class _ReadHandler(BaseHTTPRequestHandler):
        """``POST /query`` (SQL body) -> JSONCompact-like ``{"columns", "rows"}``."""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("read endpoint request %s", format % args)

        def _reply(self, status: int, doc: Mapping[str, Any]) -> None:
            body = msgspec.json.encode(doc)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if hmac.compare_digest(given.encode(), token.encode()):
                return True
            self._reply(401, {"error": "missing or wrong token; read it from owner.json"})
            return False

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            if self.path != "/health":
                self._reply(404, {"error": f"unknown path {self.path!r}; expected /health"})
                return
            self._reply(200, {"pid": os.getpid(), "database": store.database})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            if self.path.startswith("/insert/"):
                self._insert(self.path.removeprefix("/insert/"))
                return
            if self.path != "/query":
                self._reply(404, {"error": f"unknown path {self.path!r}; expected /query"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._reply(400, {"error": "invalid Content-Length"})
                return
            if length > _MAX_BODY:
                self._reply(413, {"error": f"query of {length} bytes exceeds {_MAX_BODY}"})
                return
            sql = self.rfile.read(length).decode("utf-8", errors="replace")
            refused = read_only_violation(sql)
            if refused is not None:
                self._reply(403, {"error": f"read-only endpoint: {refused}"})
                return
            try:
                result = store.query(sql)
            except StoreError as exc:
                self._reply(400, {"error": str(exc)})
                return
            except Exception as exc:  # a reply beats a dropped connection for the reader
                log.exception("read endpoint failed sql=%r", sql[:200])
                self._reply(500, {"error": f"internal error: {exc}"})
                return
            self._reply(200, {"columns": result.columns, "rows": [list(r) for r in result.rows]})

        def _insert(self, table: str) -> None:
            # Operator records only (a silence set while the worker runs); the pipeline's
            # own tables have one writer, the worker.
            if table not in OPERATOR_TABLES:
                self._reply(403, {"error": f"rows for {table!r} are refused; only "
                                           f"{', '.join(sorted(OPERATOR_TABLES))} may be written"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > _MAX_BODY:
                    self._reply(413, {"error": f"{length} bytes exceeds {_MAX_BODY}"})
                    return
                rows = msgspec.json.decode(self.rfile.read(length))
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise ValueError("expected a JSON list of objects")
                store.insert_rows(table, rows)
            except (ValueError, msgspec.DecodeError, StoreError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            # Who and why, on the owner's own record too (rows may skip the CLI's checks).
            log.info("operator rows inserted table=%s rows=%d ids=%s by=%s", table, len(rows),
                     ",".join(str(r.get("silence_id") or r.get("approval_id", ""))
                              for r in rows),
                     ",".join(sorted({str(r.get("updated_by") or r.get("created_by", ""))
                                      for r in rows})))
            self._reply(200, {"inserted": len(rows)})

    return _ReadHandler


class ReadServer:
    """A running read endpoint; :meth:`close` stops it and removes owner.json."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.token = secrets.token_urlsafe(24)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(store, self.token))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="store-read-server", daemon=True
        )
        self._thread.start()
        self.info = OwnerInfo(
            pid=os.getpid(),
            url=self.url,
            started_at=datetime.now(UTC).isoformat(),
            token=self.token,
        )
        try:
            _write_private_atomically(data_dir / OWNER_FILE, msgspec.json.encode(self.info))
        except OSError as exc:
            self._server.shutdown()
            self._server.server_close()
            raise StoreError(f"cannot write {data_dir / OWNER_FILE}: {exc}") from None
        log.info("serving reads url=%s data_dir=%s", self.url, data_dir)

    def close(self) -> None:
        """Stop serving and remove owner.json if it is still this server's."""
        self._server.shutdown()
        self._server.server_close()
        current = read_owner(self.data_dir)
        if current is not None and current.url == self.url and current.pid == os.getpid():
            (self.data_dir / OWNER_FILE).unlink(missing_ok=True)
        log.info("stopped serving reads url=%s", self.url)

    def __enter__(self) -> ReadServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_reads(store: Store, data_dir: Path) -> ReadServer:
    """Serve read-only queries on ``store`` at 127.0.0.1 and advertise it in owner.json."""
    return ReadServer(store, data_dir)


def _write_private_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class RemoteReadStore(Store):
    """A read-only :class:`Store` that queries through the owner's read endpoint."""

    url: str
    database: str
    token: str = field(default="", repr=False)
    pid: int | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        validate_identifier(self.database)

    def _request(self, path: str, body: bytes | None) -> bytes:
        req = urllib.request.Request(
            self.url + path,
            data=body,
            method="POST" if body is not None else "GET",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = str(msgspec.json.decode(raw).get("error", raw))
            except (msgspec.DecodeError, AttributeError):
                message = raw.decode(errors="replace")
            raise StoreError(message) from None
        except OSError as exc:
            raise StoreError(
                f"cannot reach the owner (pid {self.pid}) of the embedded store at "
                f"{self.url}: {exc}"
            ) from None

    def ping(self) -> bool:
        """Return True if the endpoint answers ``/health``."""
        try:
            self._request("/health", None)
        except StoreError:
            return False
        return True

    def query(self, sql: str) -> QueryResult:
        """Run one read statement in the owner process."""
        rendered = self.render(sql)
        data = self._request("/query", rendered.encode())
        try:
            doc = msgspec.json.decode(data)
            return QueryResult(
                columns=[str(c) for c in doc["columns"]], rows=[tuple(r) for r in doc["rows"]]
            )
        except (msgspec.DecodeError, KeyError, TypeError):
            raise StoreError(f"unexpected reply from {self.url}: {data[:200]!r}") from None

    def command(self, sql: str) -> None:
        """Refuse: the owner process is the only writer."""
        raise self._read_only()

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert operator rows (``OPERATOR_TABLES``) through the owner; refuse the rest."""
        if table not in OPERATOR_TABLES:
            raise self._read_only()
        self._request(f"/insert/{table}", msgspec.json.encode(list(rows)))

    def _insert_block(self, table: str, columns: list[str] | None, body: bytes) -> None:
        raise self._read_only()

    def _insert_arrow(self, table: str, data: Any) -> None:
        raise self._read_only()

    def _read_only(self) -> StoreError:
        return StoreError(f"read-only: the embedded store is owned by pid {self.pid}")

    def close(self) -> None:
        """Nothing to release: each query is its own HTTP request."""

