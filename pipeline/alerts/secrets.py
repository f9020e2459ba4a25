"""Receiver secrets from files or the environment, so ``worker.toml`` need hold none.

Every secret key ``K`` of a receiver (PagerDuty ``routing_key``, Slack ``url``, a
webhook's or Alertmanager's header values) can be given one of three ways, at most one
at a time (both is a :class:`ConfigError` naming the key):

* ``K = "..."``: in the file, as before;
* ``K_file = "/run/credentials/trainguard-worker/pd"``: read from a file (one trailing
  newline dropped). A relative path is looked up in ``$CREDENTIALS_DIRECTORY``, where
  systemd puts what the unit's ``LoadCredential=pd:/etc/trainguard/pd.key`` loads, so
  ``routing_key_file = "pd"`` works under systemd without naming its runtime path;
* ``K_env = "PD_ROUTING_KEY"``: read from that environment variable.

Headers take the same per header: ``header_files = { Authorization = "hook-auth" }`` and
``header_env = { Authorization = "HOOK_AUTH" }``. Messages name keys, paths and variable
names, never a secret's value. The environment is passed in (``environ``): library code
never reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from trainguard import envvars
from trainguard.errors import ConfigError

__all__ = ["SECRET_KEYS", "resolve_secrets"]

#: The secret keys of each receiver type (header values are handled as a table).
SECRET_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "pagerduty": ("routing_key",),
    "slack": ("url",),
    "webhook": (),
    "alertmanager": (),
}
#: Receiver types whose ``headers`` table may take values from files or the environment.
_HEADER_TYPES: Final = frozenset({"webhook", "alertmanager"})
#: A secret file bigger than this is not a key or a URL: refuse it rather than read it.
_MAX_SECRET_BYTES: Final = 64 * 1024


def resolve_secrets(entry: Mapping[str, Any], kind: str, *, where: str,
                    environ: Mapping[str, str]) -> dict[str, Any]:
    """``entry`` with every ``K_file`` / ``K_env`` replaced by ``K`` holding the secret."""
    out = dict(entry)
    for key in SECRET_KEYS.get(kind, ()):
        value = _one_secret(out, key, where=where, environ=environ)
        if value is not None:
            out[key] = value
    if kind in _HEADER_TYPES and ("header_files" in out or "header_env" in out):
        out["headers"] = _headers(out, where=where, environ=environ)
    return out


def _one_secret(entry: dict[str, Any], key: str, *, where: str,
                environ: Mapping[str, str]) -> str | None:
    given = [k for k in (key, f"{key}_file", f"{key}_env") if k in entry]
    if len(given) > 1:
        raise ConfigError(f"{where}: {' and '.join(given)} are both set; give the secret "
                          f"{key!r} one way only")
    path = entry.pop(f"{key}_file", None)
    if path is not None:
        return read_secret_file(path, f"{key}_file", where=where, environ=environ)
    name = entry.pop(f"{key}_env", None)
    if name is not None:
        return _from_env(name, f"{key}_env", where=where, environ=environ)
    return None


def _headers(entry: dict[str, Any], *, where: str, environ: Mapping[str, str]) -> dict[str, Any]:
    headers = dict(entry.get("headers") or {})
    for table_key in ("header_files", "header_env"):
        table = entry.pop(table_key, None)
        if table is None:
            continue
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: {table_key}={type(table).__name__}; expected a table "
                              "of header name = " + ("path" if table_key == "header_files"
                                                     else "variable name"))
        for header, source in table.items():
            if header in headers:
                raise ConfigError(f"{where}: header {header!r} is set in headers and in "
                                  f"{table_key}; give it one way only")
            label = f"{table_key}.{header}"
            headers[header] = (read_secret_file(source, label, where=where, environ=environ)
                               if table_key == "header_files"
                               else _from_env(source, label, where=where, environ=environ))
    return headers


def read_secret_file(path: Any, key: str, *, where: str, environ: Mapping[str, str]) -> str:
    """The secret in file ``path`` (relative: under ``$CREDENTIALS_DIRECTORY``)."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}: {key}={path!r}; expected a file path")
    file = Path(path)
    if not file.is_absolute():
        creds = environ.get(envvars.CREDENTIALS_DIRECTORY, "")
        if not creds:
            raise ConfigError(
                f"{where}: {key}={path!r} is a relative path, which is looked up in "
                f"${envvars.CREDENTIALS_DIRECTORY} (systemd LoadCredential=), but that is not "
                "set; give an absolute path"
            )
        file = Path(creds) / file
    try:
        with file.open("rb") as fh:
            data = fh.read(_MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: {key}: cannot read {str(file)!r}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    if len(data) > _MAX_SECRET_BYTES:
        raise ConfigError(f"{where}: {key}: {str(file)!r} is over {_MAX_SECRET_BYTES} bytes; "
                          "expected a single secret")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {key}: {str(file)!r} is not UTF-8 text") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text.strip():
        raise ConfigError(f"{where}: {key}: {str(file)!r} is empty")
    return text


def _from_env(name: Any, key: str, *, where: str, environ: Mapping[str, str]) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: {key}={name!r}; expected an environment variable name")
    value = environ.get(name, "")
    if not value.strip():
        raise ConfigError(f"{where}: {key}: environment variable {name} is unset or empty")
    return value
