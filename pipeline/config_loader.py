"""The worker's config file (TOML): alert lifecycle thresholds and receivers.

Flags and environment variables cover the connection settings; what is structured (a
list of receivers with secrets and URLs) lives in this file, read once by ``main()``
and validated completely before the worker starts: an unknown section or key, a bad URL
or a duplicate receiver name stops the start with a message naming it. Receiver secrets
may be read from files or environment variables named in the file (see
:mod:`~trainguard.pipeline.alerts.secrets`); ``environ`` is passed in by ``main()``. See
``infra/worker/worker.toml`` for a commented example.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.config import AlertLifecycleConfig
from trainguard.pipeline.alerts.receivers import parse_receivers
from trainguard.pipeline.alerts.severity import severity_labels_from
from trainguard.pipeline.config import AlertingConfig

__all__ = ["load_alerting"]

_SECTIONS = {"alerts", "receivers"}
_ALERTING_KEYS = {"enabled", "silences_every_s", "severity_labels"}


def load_alerting(path: str | Path, *, environ: Mapping[str, str] | None = None
                  ) -> AlertingConfig:
    """Read ``path`` and build the validated :class:`AlertingConfig`.

    ``environ`` (the process environment, from ``main()``) is where receiver secrets
    named by ``*_env`` keys and ``$CREDENTIALS_DIRECTORY`` are looked up.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"worker config {path}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"worker config {path}: not valid TOML: {exc}") from None
    return alerting_from_dict(data, source=str(path), environ=environ)


def alerting_from_dict(data: dict[str, Any], *, source: str = "worker config",
                       environ: Mapping[str, str] | None = None) -> AlertingConfig:
    """Build the :class:`AlertingConfig` from the parsed file's tables."""
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; expected "
                          f"some of: {', '.join(sorted(_SECTIONS))}")
    alerts = data.get("alerts", {})
    if not isinstance(alerts, dict):
        raise ConfigError(f"{source}: [alerts] must be a table, got {type(alerts).__name__}")
    lifecycle_keys = {f.name for f in fields(AlertLifecycleConfig)}
    bad = sorted(set(alerts) - lifecycle_keys - _ALERTING_KEYS)
    if bad:
        raise ConfigError(f"{source}: unknown key(s) in [alerts]: {', '.join(bad)}; expected "
                          f"some of: {', '.join(sorted(lifecycle_keys | _ALERTING_KEYS))}")
    try:
        lifecycle = AlertLifecycleConfig(**{k: v for k, v in alerts.items() if k in lifecycle_keys})
        labels = severity_labels_from(alerts.get("severity_labels", {}),
                                      where="[alerts] severity_labels")
        receivers = parse_receivers(data.get("receivers", []), severity_labels=labels,
                                    environ=environ)
        return AlertingConfig(
            lifecycle=lifecycle, receivers=receivers, severity_labels=labels,
            **{k: v for k, v in alerts.items() if k in _ALERTING_KEYS - {"severity_labels"}},
        )
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
