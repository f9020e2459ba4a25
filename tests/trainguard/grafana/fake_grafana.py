"""A fake Grafana: the part of its HTTP API that ``trainguard grafana push`` uses, on loopback.

It serves, on ``127.0.0.1`` and a free port, the documented endpoints (Grafana's
``docs/sources/developers/http_api/{folder,data_source,dashboard}.md``)::

    GET  /api/folders/:uid            POST /api/folders        PUT /api/folders/:uid
    GET  /api/datasources/uid/:uid    POST /api/datasources    PUT /api/datasources/uid/:uid
    GET  /api/dashboards/uid/:uid     POST /api/dashboards/db

and checks each request as Grafana would: a Bearer token (401 without or with a wrong one;
403 on writes with the viewer token), a JSON object body sent as ``application/json``,
only documented fields, required fields and uid rules (400 with a message), optimistic
locking (folder ``version`` → 412 ``version-mismatch``; data source ``version`` → 409),
dashboard overwrite semantics (same uid without ``overwrite`` and another version → 412
``version-mismatch``; same title in the folder under another uid → 412 ``name-exists``;
each save → version + 1, kept in a history with its message), read-only data sources
and provisioned dashboards. Secrets go in and never come out: responses list only
``secureJsonFields``. Every request is recorded (method, path, JSON body) for assertions.

Deliberate simplifications: one organization; no nested folders; ``overwrite`` does not
take over a same-titled dashboard (real Grafana reassigns it); a data source's uid
cannot be changed by ``PUT``.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["TOKEN", "VIEWER_TOKEN", "FakeGrafana", "Recorded"]

TOKEN = "glsa_fake_admin_token"
VIEWER_TOKEN = "glsa_fake_viewer_token"

_UID_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_FOLDER_POST = {"uid", "title", "parentUid", "description"}
_FOLDER_PUT = {"uid", "title", "version", "overwrite", "description"}
_DASHBOARD_POST = {"dashboard", "folderId", "folderUid", "message", "overwrite"}
#: The data source fields the documented requests and responses carry.
_DS_DEFAULTS: dict[str, Any] = {
    "access": "proxy", "url": "", "user": "", "database": "", "basicAuth": False,
    "basicAuthUser": "", "withCredentials": False, "isDefault": False, "jsonData": {},
}
_DS_FIELDS = set(_DS_DEFAULTS) | {"uid", "name", "type", "secureJsonData", "version", "id",
                                  "orgId", "typeLogoUrl", "readOnly", "password",
                                  "basicAuthPassword"}


class _Reply(Exception):
    """Raised by a route to answer with ``status`` and a JSON ``body``."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _bad(message: str, **extra: Any) -> _Reply:
    return _Reply(400, {"message": message, **extra})


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    body: Any
    status: int


@dataclass
class _Dashboard:
    id: int
    folder_uid: str
    provisioned: bool = False
    #: (version, dashboard JSON as stored, commit message), oldest first.
    history: list[tuple[int, dict[str, Any], str]] = field(default_factory=list)

    @property
    def current(self) -> dict[str, Any]:
        return self.history[-1][1]

    @property
    def version(self) -> int:
        return self.history[-1][0]


class FakeGrafana:
    """A local Grafana stand-in; use as a context manager, point a client at :attr:`url`."""

    def __init__(self, *, token: str = TOKEN, viewer_token: str = VIEWER_TOKEN,
                 prefix: str = "") -> None:
        self.token = token
        self.viewer_token = viewer_token
        #: Serve under a sub-path, as behind a reverse proxy (``/grafana``).
        self.prefix = prefix.rstrip("/")
        self.requests: list[Recorded] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.dashboards: dict[str, _Dashboard] = {}
        self._faults: list[tuple[str, str, int, Any]] = []
        self._ids = iter(range(1, 1_000_000))
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
            ("GET", re.compile(r"/api/folders/([^/]+)"), self._get_folder),
            ("POST", re.compile(r"/api/folders"), self._create_folder),
            ("PUT", re.compile(r"/api/folders/([^/]+)"), self._update_folder),
            ("GET", re.compile(r"/api/datasources/uid/([^/]+)"), self._get_datasource),
            ("POST", re.compile(r"/api/datasources"), self._create_datasource),
            ("PUT", re.compile(r"/api/datasources/uid/([^/]+)"), self._update_datasource),
            ("GET", re.compile(r"/api/dashboards/uid/([^/]+)"), self._get_dashboard),
            ("POST", re.compile(r"/api/dashboards/db"), self._save_dashboard),
        ]

    # -- lifecycle and assertions --------------------------------------------------------

    def __enter__(self) -> FakeGrafana:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,),
                         name="fake-grafana", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        """Base URL, as a user would give it (``http://127.0.0.1:PORT[/prefix]``)."""
        assert self._server is not None, "use FakeGrafana as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"

    @property
    def writes(self) -> list[Recorded]:
        """The requests other than ``GET``."""
        return [r for r in self.requests if r.method != "GET"]

    def fail_next(self, method: str, path: str, status: int, body: Any) -> None:
        """Answer the next ``method path`` (after auth) with ``status`` and ``body``."""
        self._faults.append((method, path, status, body))

    def dashboard_versions(self, uid: str) -> list[tuple[int, str]]:
        """``(version, message)`` of every save of dashboard ``uid``."""
        return [(v, message) for v, _, message in self.dashboards[uid].history]

    def seed_folder(self, uid: str, title: str) -> None:
        """A folder made by someone else."""
        self.folders[uid] = self._folder_view(uid, title, next(self._ids), 1)

    def seed_datasource(self, payload: dict[str, Any], *, read_only: bool = False) -> None:
        """A data source made by someone else (``read_only``: provisioned from a file)."""
        self._store_datasource(payload, version=1, ds_id=next(self._ids), read_only=read_only)

    def seed_dashboard(self, dashboard: dict[str, Any], *, folder_uid: str = "",
                       provisioned: bool = False) -> None:
        """A dashboard saved by someone else, at version 1."""
        dash_id = next(self._ids)
        stored = {**copy.deepcopy(dashboard), "id": dash_id, "version": 1}
        self.dashboards[dashboard["uid"]] = _Dashboard(dash_id, folder_uid, provisioned,
                                                       [(1, stored, "seeded")])

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        """Answer one request: ``(status, JSON body)``; records it."""
        path = raw_path.split("?", 1)[0]
        body: Any = None
        with self._lock:
            try:
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise _bad("bad request data") from None
                status, reply = 200, self._dispatch(method, path, headers, body)
            except _Reply as answer:
                status, reply = answer.status, answer.body
            self.requests.append(Recorded(method, path, copy.deepcopy(body), status))
        return status, reply

    def _dispatch(self, method: str, path: str, headers: Any, body: Any) -> Any:
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                raise _Reply(404, {"message": "Not found"})
            path = path[len(self.prefix):]
        auth = headers.get("Authorization") or ""
        if not auth:
            raise _Reply(401, {"message": "Unauthorized"})
        given = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        if given not in (self.token, self.viewer_token):
            raise _Reply(401, {"message": "invalid API key"})
        for route_method, pattern, fn in self._routes:
            match = pattern.fullmatch(path)
            if not match or route_method != method:
                continue
            if method != "GET" and given == self.viewer_token:
                raise _Reply(403, {"title": "Access denied", "message":
                                   "You'll need additional permissions to perform this action."})
            for n, (f_method, f_path, status, reply) in enumerate(self._faults):
                if (f_method, f_path) == (method, path):
                    del self._faults[n]
                    raise _Reply(status, reply)
            if method == "GET":
                return fn(*match.groups())
            content_type = headers.get("Content-Type") or ""
            if not content_type.startswith("application/json"):
                raise _bad(f"bad request data: Content-Type {content_type!r}, "
                           "expected application/json")
            if not isinstance(body, dict):
                raise _bad("bad request data: expected a JSON object")
            return fn(*match.groups(), body)
        raise _Reply(404, {"message": "Not found"})

    # -- folders -------------------------------------------------------------------------

    def _folder_view(self, uid: str, title: str, folder_id: int, version: int) -> dict[str, Any]:
        slug = _slug(title)
        return {"id": folder_id, "uid": uid, "title": title, "url": f"/dashboards/f/{uid}/{slug}",
                "hasAcl": False, "canSave": True, "canEdit": True, "canAdmin": True,
                "createdBy": "admin", "created": "2025-01-01T00:00:00Z", "updatedBy": "admin",
                "updated": "2025-01-01T00:00:00Z", "version": version}

    def _get_folder(self, uid: str) -> Any:
        if uid not in self.folders:
            raise _Reply(404, {"message": "folder not found", "status": "not-found"})
        return self.folders[uid]

    def _create_folder(self, body: dict[str, Any]) -> Any:
        _only(body, _FOLDER_POST, "folder")
        title, uid = body.get("title"), body.get("uid") or f"f{next(self._ids)}"
        if not isinstance(title, str) or not title.strip():
            raise _bad("folder title cannot be empty")
        _check_uid(uid, "folder")
        if uid in self.folders:
            raise _Reply(409, {"message": "a folder with the same uid already exists"})
        if any(f["title"] == title for f in self.folders.values()):
            raise _Reply(409, {"message": "a folder with the same name already exists"})
        self.folders[uid] = self._folder_view(uid, title, next(self._ids), 1)
        return self.folders[uid]

    def _update_folder(self, uid: str, body: dict[str, Any]) -> Any:
        _only(body, _FOLDER_PUT, "folder")
        if uid not in self.folders:
            raise _Reply(404, {"message": "folder not found", "status": "not-found"})
        folder = self.folders[uid]
        if body.get("uid", uid) != uid:
            raise _bad("the fake does not change folder uids")
        if not isinstance(body.get("overwrite", False), bool):
            raise _bad("bad request data: overwrite must be a boolean")
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            raise _Reply(412, {"message": "The folder has been changed by someone else",
                               "status": "version-mismatch"})
        title = body.get("title", folder["title"])
        if not isinstance(title, str) or not title.strip():
            raise _bad("folder title cannot be empty")
        self.folders[uid] = self._folder_view(uid, title, folder["id"], folder["version"] + 1)
        return self.folders[uid]

    # -- data sources --------------------------------------------------------------------

    def _datasource_view(self, uid: str) -> dict[str, Any]:
        return copy.deepcopy(self.datasources[uid])

    def _get_datasource(self, uid: str) -> Any:
        if uid not in self.datasources:
            raise _Reply(404, {"message": "Data source not found"})
        return self._datasource_view(uid)

    def _check_datasource(self, body: dict[str, Any], uid: str) -> None:
        _only(body, _DS_FIELDS, "data source")
        for key in ("name", "type"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise _bad(f"bad request data: data source {key!r} is required")
        if body.get("access", "proxy") not in ("proxy", "direct"):
            raise _bad(f"bad request data: access {body.get('access')!r}; "
                       "expected proxy or direct")
        _check_uid(uid, "data source")
        for key in ("jsonData", "secureJsonData"):
            if body.get(key) is not None and not isinstance(body[key], dict):
                raise _bad(f"bad request data: {key} must be an object")
        if any(d["name"] == body["name"] and d["uid"] != uid for d in self.datasources.values()):
            raise _Reply(409, {"message": "data source with the same name already exists"})

    def _store_datasource(self, body: dict[str, Any], *, version: int, ds_id: int,
                          read_only: bool = False) -> dict[str, Any]:
        uid = body["uid"]
        secrets = {**self.secrets.get(uid, {}), **(body.get("secureJsonData") or {})}
        self.secrets[uid] = secrets
        visible = {k: copy.deepcopy(body.get(k, v)) for k, v in _DS_DEFAULTS.items()}
        self.datasources[uid] = {
            "id": ds_id, "uid": uid, "orgId": 1, "name": body["name"], "type": body["type"],
            "typeLogoUrl": "", **visible, "jsonData": visible["jsonData"] or {},
            "secureJsonFields": {k: True for k in secrets}, "version": version,
            "readOnly": read_only,
        }
        return self._datasource_view(uid)

    def _create_datasource(self, body: dict[str, Any]) -> Any:
        uid = body.get("uid") or f"ds{next(self._ids)}"
        self._check_datasource(body, uid)
        if uid in self.datasources:
            raise _Reply(409, {"message": "data source with the same uid already exists"})
        view = self._store_datasource({**body, "uid": uid}, version=1, ds_id=next(self._ids))
        return {"datasource": view, "id": view["id"], "message": "Datasource added",
                "name": view["name"]}

    def _update_datasource(self, uid: str, body: dict[str, Any]) -> Any:
        if uid not in self.datasources:
            raise _Reply(404, {"message": "Data source not found"})
        if body.get("uid", uid) != uid:
            raise _bad("the fake does not change data source uids")
        self._check_datasource(body, uid)
        current = self.datasources[uid]
        if current["readOnly"]:
            raise _Reply(403, {"message": "Cannot modify read-only data source"})
        # Grafana refuses a version older than the stored one; no version means "force".
        if body.get("version") is not None and body["version"] < current["version"]:
            raise _Reply(409, {"message": "Datasource has already been updated by someone "
                                          "else. Please reload and try again"})
        view = self._store_datasource({**body, "uid": uid}, version=current["version"] + 1,
                                      ds_id=current["id"])
        return {"datasource": view, "id": view["id"], "message": "Datasource updated",
                "name": view["name"]}

    # -- dashboards ----------------------------------------------------------------------

    def _get_dashboard(self, uid: str) -> Any:
        if uid not in self.dashboards:
            raise _Reply(404, {"message": "Dashboard not found"})
        dash = self.dashboards[uid]
        folder = self.folders.get(dash.folder_uid)
        slug = _slug(dash.current["title"])
        return {"dashboard": copy.deepcopy(dash.current), "meta": {
            "type": "db", "canSave": True, "canEdit": True, "canAdmin": True, "canStar": True,
            "slug": slug, "url": f"/d/{uid}/{slug}", "version": dash.version,
            "created": "2025-01-01T00:00:00Z", "updated": "2025-01-01T00:00:00Z",
            "folderId": folder["id"] if folder else 0, "folderUid": dash.folder_uid,
            "folderTitle": folder["title"] if folder else "General",
            "folderUrl": folder["url"] if folder else "", "provisioned": dash.provisioned,
        }}

    def _save_dashboard(self, body: dict[str, Any]) -> Any:
        _only(body, _DASHBOARD_POST, "dashboard save")
        dashboard, overwrite = body.get("dashboard"), body.get("overwrite", False)
        if not isinstance(dashboard, dict):
            raise _bad("bad request data: dashboard must be an object")
        if not isinstance(overwrite, bool) or not isinstance(body.get("message", ""), str):
            raise _bad("bad request data: overwrite must be a boolean, message a string")
        title = dashboard.get("title")
        if not isinstance(title, str) or not title.strip():
            raise _bad("Dashboard title cannot be empty", status="empty-name")
        uid = dashboard.get("uid") or f"d{next(self._ids)}"
        if not isinstance(uid, str) or len(uid) > 40:
            raise _bad("uid too long, max 40 characters")
        if not _UID_RE.match(uid):
            raise _bad("uid contains illegal characters")
        folder_uid = body.get("folderUid") or ""
        if folder_uid and folder_uid not in self.folders:
            raise _bad("folder not found")
        existing = self.dashboards.get(uid)
        if dashboard.get("id") is not None and (existing is None
                                                or existing.id != dashboard["id"]):
            raise _Reply(404, {"message": "Dashboard not found"})
        if existing is not None:
            if existing.provisioned:
                raise _bad("Cannot save provisioned dashboard")
            if not overwrite and dashboard.get("version") != existing.version:
                raise _Reply(412, {"message": "The dashboard has been changed by someone else",
                                   "status": "version-mismatch"})
        clash = any(other_uid != uid and d.folder_uid == folder_uid
                    and d.current["title"].lower() == title.lower()
                    for other_uid, d in self.dashboards.items())
        if clash and not overwrite:
            raise _Reply(412, {"message": "A dashboard with the same name in the folder "
                                          "already exists", "status": "name-exists"})
        dash_id = existing.id if existing else next(self._ids)
        version = existing.version + 1 if existing else 1
        stored = {**copy.deepcopy(dashboard), "id": dash_id, "uid": uid, "version": version}
        if existing is None:
            existing = self.dashboards[uid] = _Dashboard(dash_id, folder_uid)
        existing.folder_uid = folder_uid
        existing.history.append((version, stored, body.get("message", "")))
        slug = _slug(title)
        return {"id": dash_id, "uid": uid, "url": f"/d/{uid}/{slug}", "status": "success",
                "version": version, "slug": slug}


class _Handler(BaseHTTPRequestHandler):
    """Hands each request to the :class:`FakeGrafana` it belongs to."""

    fake: FakeGrafana
    protocol_version = "HTTP/1.1"  # keep-alive, as niquests expects
    # Headers and body leave in one segment: small separate writes on a kept-alive
    # connection stall ~40 ms each on Nagle's algorithm and delayed ACKs.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, reply = self.fake.handle(self.command, self.path, self.headers, raw)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the recorded requests say more, and stderr stays quiet


def _only(body: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(f"bad request data: unknown {what} field(s) {unknown}; "
                   f"documented: {sorted(allowed)}")


def _check_uid(uid: Any, what: str) -> None:
    if not isinstance(uid, str) or len(uid) > 40:
        raise _bad(f"invalid {what} uid {uid!r}: max 40 characters")
    if not _UID_RE.match(uid):
        raise _bad(f"invalid {what} uid {uid!r}: letters, digits, '-' and '_' only")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
