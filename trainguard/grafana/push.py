"""``trainguard grafana push``: put trainguard's folder, data source and dashboards into a Grafana.

For a Grafana that trainguard does not provision from files (a shared, long-lived one),
:func:`push` goes through Grafana's HTTP API with a service account token. It is
idempotent, so it can run on every deploy: the folder is created when its uid is missing
and renamed when its title differs; the ClickHouse data source is created or updated by
uid; a dashboard is posted only when its JSON (less ``id`` and ``version``) or its folder
differs from what Grafana holds, so re-running adds no dashboard versions. Data source
secrets are write-only in Grafana and cannot be compared, so a given password is re-sent
on every push (one idempotent ``PUT``; data sources keep no version history).

Every failure is a :class:`GrafanaError` (a :class:`~trainguard.errors.TrainguardError`)
naming what was being done and, for connection failures, the Grafana URL.
``grafana_client`` is imported only when used: the CLI must load without the
``pipeline`` extra. The command itself (flags, environment) is
:mod:`trainguard.grafana.push_cli`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from trainguard import __version__
from trainguard.errors import ConfigError, TrainguardError
from trainguard.grafana.plugin import DATASOURCE_NAME, DATASOURCE_TYPE, DATASOURCE_UID
from trainguard.resources import infra_candidates

if TYPE_CHECKING:
    from grafana_client import GrafanaApi

__all__ = [
    "DATASOURCE_NAME", "DATASOURCE_TYPE", "DATASOURCE_UID", "GrafanaAuthError",
    "GrafanaConflictError", "GrafanaError", "GrafanaUnreachableError", "PushItem",
    "PushReport", "clickhouse_datasource", "find_dashboards_dir", "load_dashboards", "push",
]

logger = logging.getLogger(__name__)

#: Grafana's rule for folder, dashboard and data source uids.
_UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
#: Keys Grafana sets on save; comparing them would make every dashboard look changed.
_SERVER_KEYS = ("id", "version")

Kind = Literal["folder", "datasource", "dashboard"]
Action = Literal["created", "updated", "unchanged"]


class GrafanaError(TrainguardError):
    """Grafana refused a request of the push, or answered with an error."""


class GrafanaAuthError(GrafanaError):
    """The token is missing, invalid, or lacks the role the push needs (401/403)."""


class GrafanaUnreachableError(GrafanaError):
    """No answer from Grafana: connection refused, unknown host, timeout."""


class GrafanaConflictError(GrafanaError):
    """Grafana refused a write because of a concurrent change or a clash (409/412)."""


@dataclass(frozen=True)
class PushItem:
    """What the push did (or, in a dry run, would do) to one folder, data source or dashboard."""

    kind: Kind
    uid: str
    title: str
    action: Action
    #: The version Grafana holds after the push (``None`` when unknown or in a dry run).
    version: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class PushReport:
    """Every item of one push, in the order they were handled."""

    items: tuple[PushItem, ...]
    dry_run: bool = False

    def with_action(self, action: Action) -> tuple[PushItem, ...]:
        """The items that ended with ``action``."""
        return tuple(item for item in self.items if item.action == action)

    @property
    def created(self) -> tuple[PushItem, ...]:
        """Items that did not exist before."""
        return self.with_action("created")

    @property
    def updated(self) -> tuple[PushItem, ...]:
        """Items that existed and were written."""
        return self.with_action("updated")

    @property
    def unchanged(self) -> tuple[PushItem, ...]:
        """Items already as wanted: nothing was sent for them."""
        return self.with_action("unchanged")

    def lines(self) -> list[str]:
        """One human-readable line per item, then a summary."""
        verbs = {"created": "create", "updated": "update", "unchanged": "leave"}
        out = []
        for item in self.items:
            verb = f"would {verbs[item.action]}" if self.dry_run else item.action
            version = "" if item.version is None else f" (version {item.version})"
            detail = f": {item.detail}" if item.detail else ""
            out.append(f"{verb:<15} {item.kind:<10} {item.uid} {item.title!r}{version}{detail}")
        counts = ", ".join(f"{len(self.with_action(a))} {a}"
                           for a in ("created", "updated", "unchanged"))
        out.append(("dry run, nothing written: " if self.dry_run else "") + counts)
        return out


def push(
    api: GrafanaApi, *, dashboards: Sequence[Mapping[str, Any]], datasource: Mapping[str, Any],
    folder_title: str = "trainguard", folder_uid: str = "trainguard", dry_run: bool = False,
) -> PushReport:
    """Make Grafana hold the folder, the data source and ``dashboards``; report what changed.

    ``datasource`` is a Grafana data source payload with a ``uid`` (see
    :func:`clickhouse_datasource`). With ``dry_run`` only ``GET`` requests are sent and
    the report says what would change. Everything is validated before the first request.
    """
    _check_uid("folder", folder_uid)
    if not folder_title.strip():
        raise ConfigError("empty folder title; expected e.g. 'trainguard'")
    _check_datasource(datasource)
    _check_dashboards(dashboards)
    session = _Session(api, dry_run)
    items = [session.folder(folder_uid, folder_title), session.datasource(datasource)]
    message = f"trainguard push {__version__}"
    items += [session.dashboard(d, folder_uid, message) for d in dashboards]
    return PushReport(tuple(items), dry_run)


def clickhouse_datasource(
    url: str, *, database: str, user: str, password: str | None = None,
    uid: str = DATASOURCE_UID, name: str = DATASOURCE_NAME,
) -> dict[str, Any]:
    """The payload of the ClickHouse data source (plugin 4.x, HTTP protocol) at ``url``.

    ``url`` is ClickHouse's HTTP interface as Grafana's server reaches it, e.g.
    ``http://clickhouse:8123``; the password, when given, goes to ``secureJsonData``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"ClickHouse URL {url!r}; expected http(s)://HOST[:PORT][/PATH]")
    if parts.username or parts.password:
        raise ConfigError(f"ClickHouse URL {_redact(url)!r} carries credentials; give the user "
                          "with --ro-user and the password through --ro-password-env")
    secure = parts.scheme == "https"
    json_data: dict[str, Any] = {
        "host": parts.hostname, "port": parts.port or (8443 if secure else 8123),
        "protocol": "http", "secure": secure, "username": user, "defaultDatabase": database,
    }
    if parts.path.strip("/"):
        json_data["path"] = parts.path.strip("/")  # the plugin wants it without slashes
    payload: dict[str, Any] = {"uid": uid, "name": name, "type": DATASOURCE_TYPE,
                               "access": "proxy", "jsonData": json_data}
    if password:
        payload["secureJsonData"] = {"password": password}
    return payload


# -- the requests ------------------------------------------------------------------------


class _Session:
    """One push against one Grafana: the requests, and their errors made readable."""

    def __init__(self, api: GrafanaApi, dry_run: bool) -> None:
        self.api = api
        self.dry_run = dry_run
        self.url = _redact(str(getattr(api, "url", None) or api.client.url))

    def folder(self, uid: str, title: str) -> PushItem:
        existing = self._call(f"reading folder {uid!r}", self.api.folder.get_folder, uid,
                              missing_ok=True)
        if existing is None:
            if self.dry_run:
                return PushItem("folder", uid, title, "created")
            made = self._call(f"creating folder {uid!r}", self.api.folder.create_folder,
                              title, uid=uid)
            return PushItem("folder", uid, title, "created", made.get("version"))
        if existing.get("title") == title:
            return PushItem("folder", uid, title, "unchanged", existing.get("version"))
        detail = f"renamed from {existing.get('title')!r}"
        if self.dry_run:
            return PushItem("folder", uid, title, "updated", detail=detail)
        # Sending the version read above makes Grafana answer 412 if someone changed the
        # folder in between, instead of silently overwriting their change.
        version = existing.get("version")
        renamed = self._call(f"renaming folder {uid!r}", self.api.folder.update_folder, uid,
                             title=title, version=version, overwrite=not version)
        return PushItem("folder", uid, title, "updated", renamed.get("version"), detail)

    def datasource(self, wanted: Mapping[str, Any]) -> PushItem:
        uid, name = str(wanted["uid"]), str(wanted["name"])
        ds = self.api.datasource
        existing = self._call(f"reading data source {uid!r}", ds.get_datasource_by_uid, uid,
                              missing_ok=True)
        if existing is None:
            if self.dry_run:
                return PushItem("datasource", uid, name, "created")
            made = self._call(f"creating data source {uid!r} ({name!r})",
                              ds.create_datasource, dict(wanted))
            return PushItem("datasource", uid, name, "created",
                            (made.get("datasource") or {}).get("version"))
        changed = _changed_fields(wanted, existing)
        secrets = sorted(wanted.get("secureJsonData") or {})
        if not changed and not secrets:
            return PushItem("datasource", uid, name, "unchanged", existing.get("version"))
        if existing.get("readOnly"):
            if not changed:  # provisioned from a file: its secrets are that file's business
                return PushItem("datasource", uid, name, "unchanged", existing.get("version"),
                                "read-only (provisioned); password not re-sent")
            raise GrafanaError(
                f"data source {uid!r} in Grafana at {self.url} is provisioned from a file "
                f"(read-only) and differs in {', '.join(changed)}; change the provisioning "
                "file, or remove it there, instead of pushing")
        detail = (f"changed: {', '.join(changed)}" if changed
                  else f"{', '.join(secrets)} re-sent (write-only, cannot be compared)")
        if self.dry_run:
            return PushItem("datasource", uid, name, "updated", detail=detail)
        body = dict(wanted)
        if existing.get("version"):
            body["version"] = existing["version"]  # 409 if someone updated it meanwhile
        done = self._call(f"updating data source {uid!r} ({name!r})",
                          ds.update_datasource_by_uid, uid, body)
        return PushItem("datasource", uid, name, "updated",
                        (done.get("datasource") or {}).get("version"), detail)

    def dashboard(self, dashboard: Mapping[str, Any], folder_uid: str, message: str) -> PushItem:
        uid, title = str(dashboard["uid"]), str(dashboard["title"])
        existing = self._call(f"reading dashboard {uid!r}", self.api.dashboard.get_dashboard, uid,
                              missing_ok=True)
        action: Action = "created"
        detail = ""
        if existing is not None:
            meta = existing.get("meta") or {}
            current = existing.get("dashboard") or {}
            same_json = _comparable(current) == _comparable(dashboard)
            same_folder = (meta.get("folderUid") or "") == folder_uid
            if same_json and same_folder:
                return PushItem("dashboard", uid, title, "unchanged", current.get("version"))
            if meta.get("provisioned"):
                raise GrafanaError(
                    f"dashboard {uid!r} in Grafana at {self.url} is provisioned from a file, "
                    "and Grafana refuses API saves of it; update the file instead of pushing")
            action = "updated"
            was_in = meta.get("folderUid") or "General"
            detail = "; ".join(([] if same_json else ["JSON changed"])
                               + ([] if same_folder else [f"moved from folder {was_in!r}"]))
        if self.dry_run:
            return PushItem("dashboard", uid, title, action, detail=detail)
        body = {"dashboard": {**dashboard, "id": None}, "folderUid": folder_uid,
                "overwrite": True, "message": message}
        saved = self._call(f"saving dashboard {uid!r} ({title!r})",
                           self.api.dashboard.update_dashboard, body)
        return PushItem("dashboard", uid, title, action, saved.get("version"),
                        detail or str(saved.get("url") or ""))

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, missing_ok: bool = False,
              **kw: Any) -> Any:
        """``fn(*args, **kw)``, its errors made readable; ``None`` on 404 if ``missing_ok``."""
        from grafana_client.client import GrafanaClientError, GrafanaException
        from niquests.exceptions import RequestException

        logger.debug("grafana: %s", what)
        try:
            return fn(*args, **kw)
        except GrafanaClientError as exc:
            if missing_ok and exc.status_code == 404:
                return None
            raise _http_error(exc.status_code, exc.response, what, self.url) from None
        except GrafanaException as exc:  # server errors, and timeouts (status 0)
            if exc.status_code:
                raise _http_error(exc.status_code, exc.response, what, self.url) from None
            raise GrafanaUnreachableError(
                f"no answer from Grafana at {self.url} while {what}: {exc.message}") from None
        # grafana-client wraps timeouts but lets niquests' ConnectionError through.
        except RequestException as exc:
            raise GrafanaUnreachableError(
                f"cannot reach Grafana at {self.url} while {what} ({_reason(exc)}); is it "
                "running, and is the URL right?") from None


def _http_error(status: int, response: Any, what: str, url: str) -> GrafanaError:
    message = str(response.get("message", "")) if isinstance(response, dict) else str(response)
    reason = str(response.get("status", "")) if isinstance(response, dict) else ""
    said = f"{status}{' ' + reason if reason else ''}: {message or 'no message'}"
    if status == 401:
        return GrafanaAuthError(
            f"Grafana at {url} rejected the token while {what} ({said}); use a valid service "
            "account token with the Editor or Admin role (Admin to manage the data source)")
    if status == 403:
        return GrafanaAuthError(
            f"Grafana at {url} denied {what} ({said}); the token needs the Editor role for "
            "folders and dashboards and the Admin role for the data source")
    if status in (409, 412):
        return GrafanaConflictError(
            f"Grafana at {url} refused {what} ({said}); another change or an object with the "
            "same name or uid is in the way: check it in Grafana, then push again")
    return GrafanaError(f"Grafana at {url} failed {what} ({said})")


def _reason(exc: Exception) -> str:
    """The root cause of a connection error, without urllib3's long wrapping."""
    errno = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", str(exc))
    if errno:
        return errno.group(1).strip()
    return "host name not resolved" if "resolve" in str(exc).lower() else type(exc).__name__


def _redact(url: str) -> str:
    """``url`` without user and password, for messages."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _comparable(dashboard: Mapping[str, Any]) -> Any:
    """The dashboard as JSON would carry it, less the keys Grafana sets on save."""
    # The round trip turns tuples into lists, as the stored copy has them.
    plain = json.loads(json.dumps(dashboard))
    for key in _SERVER_KEYS:
        plain.pop(key, None)
    return plain


def _changed_fields(wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> list[str]:
    """The data source fields (``jsonData.x`` for its keys) where Grafana differs."""
    changed: list[str] = []
    for key, value in wanted.items():
        if key in ("uid", "secureJsonData", "version"):
            continue
        have = existing.get(key)
        if isinstance(value, Mapping) and (have is None or isinstance(have, Mapping)):
            have = have or {}
            changed += [f"{key}.{k}" for k in sorted(set(value) | set(have))
                        if value.get(k) != have.get(k)]
        elif _comparable({"v": value}) != _comparable({"v": have}):
            changed.append(key)
    return changed


def _check_uid(kind: str, uid: object) -> None:
    if not isinstance(uid, str) or not _UID_RE.match(uid):
        raise ConfigError(f"{kind} uid {uid!r}; expected 1 to 40 letters, digits, '-' or '_'")


def _check_datasource(ds: Mapping[str, Any]) -> None:
    _check_uid("data source", ds.get("uid"))
    for key in ("name", "type", "access"):
        if not isinstance(ds.get(key), str) or not ds[key]:
            raise ConfigError(f"data source {ds.get('uid')!r} lacks {key!r}")


def _check_dashboards(dashboards: Sequence[Mapping[str, Any]]) -> None:
    seen: set[str] = set()
    for n, dashboard in enumerate(dashboards):
        if not isinstance(dashboard, Mapping):
            raise ConfigError(f"dashboard #{n + 1} is a {type(dashboard).__name__}; "
                              "expected a JSON object")
        title = dashboard.get("title")
        if not isinstance(title, str) or not title.strip():
            raise ConfigError(f"dashboard #{n + 1} (uid {dashboard.get('uid')!r}) has no title")
        # Without a fixed uid every push would create a new dashboard.
        _check_uid(f"dashboard {title!r}", dashboard.get("uid"))
        if dashboard["uid"] in seen:
            raise ConfigError(f"dashboard uid {dashboard['uid']!r} appears twice")
        seen.add(dashboard["uid"])


# -- the dashboard files -----------------------------------------------------------------


def find_dashboards_dir(explicit: str | Path | None = None) -> Path:
    """The directory of dashboard JSON files: ``explicit``, else the checkout's or the wheel's."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise ConfigError(f"--dashboards {str(path)!r} is not a directory")
        return path
    candidates = infra_candidates("grafana", "dashboards")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ConfigError("cannot find the dashboards; looked in: "
                      + ", ".join(f"'{c}'" for c in candidates) + "; pass --dashboards DIR")


def load_dashboards(directory: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` in ``directory``, by file name; Grafana's export wrapper is unwrapped."""
    dashboards = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read dashboard {str(path)!r}: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("dashboard"), dict) and "title" not in doc:
            doc = doc["dashboard"]
        if not isinstance(doc, dict):
            raise ConfigError(f"dashboard {str(path)!r} is not a JSON object")
        dashboards.append(doc)
    if not dashboards:
        raise ConfigError(f"no *.json dashboards in {str(directory)!r}")
    return dashboards
