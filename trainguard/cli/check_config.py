"""``--check-config`` of ``trainguard agent`` and ``trainguard worker``: validate, print, stop.

The configuration is built exactly as the daemon builds it at start (TOML file, then the
environment, then flags; key files read and checked), then printed as JSON with every
secret replaced by ``"***"``; nothing is opened, bound or started. A bad value is the
same :class:`~trainguard.errors.ConfigError` the daemon would stop with (exit 2).

A value counts as secret when its dataclass field is declared ``repr=False`` (how the
config objects keep passwords, routing keys and webhook URLs out of logs), when it is a
:class:`~trainguard.pipeline.store.url.Secret`-like object (it has ``reveal()``), or when
its field's name says so (``password``, ``token``, ``routing_key``, ...).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any

from trainguard.cli._common import print_json

__all__ = ["REDACTED", "config_doc", "print_config"]

#: What a secret's value is printed as.
REDACTED = "***"
#: Field names that hold a secret whatever their declaration (``*_file`` names a path).
_SECRET_NAME = re.compile(r"(?:^|_)(?:password|secret|token|routing_key|api_key|headers)$")


def config_doc(value: Any) -> Any:
    """``value`` as JSON-ready builtins, every secret in it replaced by :data:`REDACTED`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            secret = not f.repr or _SECRET_NAME.search(f.name) is not None
            out[f.name] = _redacted(item) if secret else config_doc(item)
        return out
    if callable(getattr(value, "reveal", None)):  # a Secret: never revealed here
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): config_doc(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(config_doc(v) for v in value)
    if isinstance(value, list | tuple):
        return [config_doc(v) for v in value]
    if isinstance(value, enum.Enum):
        return config_doc(value.value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _redacted(value: Any) -> Any:
    """A secret field: whether it is set shows, its value does not."""
    if value is None or value == "":
        return value
    if isinstance(value, Mapping):  # e.g. webhook headers: the names are not secret
        return {str(k): REDACTED for k in value}
    return REDACTED


def print_config(config: Any) -> int:
    """Print ``config`` (redacted) as JSON on stdout; the exit status of a valid config."""
    print_json(config_doc(config))
    return 0
