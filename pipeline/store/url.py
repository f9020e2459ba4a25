"""Where the store lives, parsed once from one URL string.

Two backends share one URL syntax:

* ``chdb://PATH[?database=NAME]`` -- the embedded engine (chdb) in a local directory.
  ``chdb:///var/lib/tg`` is absolute; ``chdb://data`` and ``chdb://./data`` are relative
  to the working directory and resolved to an absolute path at parse time.
* ``http(s)://[user[:password]@]host[:port]/[database]`` -- a ClickHouse server reached
  with clickhouse-connect (ports 8123 / 8443 by default).

Passwords are wrapped in :class:`Secret` so that neither ``repr`` nor ``str`` of a
:class:`StoreUrl` ever shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from trainguard.errors import ConfigError

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_USER",
    "Scheme",
    "Secret",
    "StoreUrl",
    "validate_identifier",
]

DEFAULT_DATABASE = "trainguard"
DEFAULT_USER = "default"
_DEFAULT_PORTS = {"http": 8123, "https": 8443}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Scheme = Literal["chdb", "http", "https"]


def validate_identifier(name: str, what: str = "database name") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise :class:`ConfigError`."""
    if not _IDENTIFIER.fullmatch(name):
        raise ConfigError(
            f"invalid {what} {name!r}; expected letters, digits and '_', not starting with a digit"
        )
    return name


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs; read it with ``reveal``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value, for handing to a client library only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class StoreUrl:
    """A validated store location: an embedded chdb directory or a ClickHouse server."""

    scheme: Scheme
    database: str = DEFAULT_DATABASE
    path: Path | None = None
    host: str = ""
    port: int = 0
    user: str = DEFAULT_USER
    password: Secret | None = None

    @property
    def embedded(self) -> bool:
        """True for ``chdb://`` (an in-process engine owning a local directory)."""
        return self.scheme == "chdb"

    @property
    def secure(self) -> bool:
        """True for ``https://``."""
        return self.scheme == "https"

    @classmethod
    def parse(cls, url: str, password: Secret | None = None) -> StoreUrl:
        """Parse ``url``; ``password`` is used for a server URL that carries none itself."""
        scheme, sep, _ = url.partition("://")
        if not sep or scheme.lower() not in ("chdb", "http", "https"):
            shown = scheme if sep else url
            raise ConfigError(
                f"unsupported store URL scheme {shown!r}; "
                "expected chdb://PATH or http(s)://HOST:PORT/DB"
            )
        if scheme.lower() == "chdb":
            return cls._parse_chdb(url[len(scheme) + 3 :])
        return cls._parse_server(url, password)

    @classmethod
    def _parse_chdb(cls, rest: str) -> StoreUrl:
        raw_path, _, query = rest.partition("?")
        if not raw_path:
            raise ConfigError("store URL 'chdb://' has no path; expected chdb://PATH")
        params = _params(query, allowed=("database",))
        database = validate_identifier(params.get("database", DEFAULT_DATABASE))
        path = Path(unquote(raw_path)).expanduser().resolve()
        return cls(scheme="chdb", database=database, path=path)

    @classmethod
    def _parse_server(cls, url: str, password: Secret | None) -> StoreUrl:
        parts = urlsplit(url)
        scheme: Scheme = "https" if parts.scheme.lower() == "https" else "http"
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise ConfigError(f"invalid port in store URL {_redact(url)!r}: {exc}") from None
        if not parts.hostname:
            raise ConfigError(f"store URL {_redact(url)!r} has no host; expected {scheme}://HOST")
        database = parts.path.strip("/") or DEFAULT_DATABASE
        if "/" in database:
            raise ConfigError(f"store URL path {parts.path!r} must be a single database name")
        if parts.query:
            database = _params(parts.query, allowed=("database",)).get("database", database)
        in_url = Secret(unquote(parts.password)) if parts.password is not None else None
        return cls(
            scheme=scheme,
            database=validate_identifier(unquote(database)),
            host=parts.hostname,
            port=port,
            user=unquote(parts.username) if parts.username else DEFAULT_USER,
            password=in_url if in_url is not None else password,
        )

    def __str__(self) -> str:
        if self.scheme == "chdb":
            suffix = "" if self.database == DEFAULT_DATABASE else f"?database={self.database}"
            return f"chdb://{self.path}{suffix}"
        auth = quote(self.user, safe="") + (":***" if self.password is not None else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{auth}@{host}:{self.port}/{self.database}"


def _params(query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """Parse a URL query string, refusing unknown or repeated keys."""
    parsed = parse_qs(query, keep_blank_values=True)
    out: dict[str, str] = {}
    for key, values in parsed.items():
        if key not in allowed:
            raise ConfigError(
                f"unknown store URL parameter {key!r}; expected one of: {', '.join(allowed)}"
            )
        if len(values) != 1:
            raise ConfigError(f"store URL parameter {key!r} given {len(values)} times")
        out[key] = values[0]
    return out


def _redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
