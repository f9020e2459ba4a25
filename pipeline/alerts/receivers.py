"""Where alerts go: one frozen, validated configuration object per receiver.

Four kinds: Alertmanager (API v2), PagerDuty (Events API v2), Slack (incoming webhook)
and a generic JSON webhook. Each has a unique ``name`` (the ledger and the metrics key),
a ``min_severity`` (``page`` > ``ticket`` > ``info``) and the retry settings of its
delivery worker. :func:`parse_receivers` builds them from the TOML list of tables::

    [[receivers]]
    type = "pagerduty"
    name = "oncall"
    routing_key = "..."

Secrets (PagerDuty routing keys, Slack webhook URLs, webhook and Alertmanager headers)
are left out of ``repr`` and of error messages, so a logged config or a traceback never
leaks them; each may come from a file or the environment instead of the TOML
(``routing_key_file = "pd"``, see :mod:`~trainguard.pipeline.alerts.secrets`).

What a receiver is sent for an alert's severity (``page``/``ticket``/``info``) is its
``severity_labels`` (``critical``/``warning``/``info`` by default): the ``[alerts]``
table's, with the receiver's own ``severity_labels`` table over it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import urlsplit

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.secrets import SECRET_KEYS, resolve_secrets
from trainguard.pipeline.alerts.severity import (
    DEFAULT_SEVERITY_LABELS,
    SEVERITY_RANK,
    Severity,
    SeverityLabels,
    severity_labels_from,
)

__all__ = [
    "SEVERITY_RANK",
    "AlertmanagerReceiver",
    "PagerDutyReceiver",
    "ReceiverConfig",
    "Severity",
    "SlackReceiver",
    "WebhookReceiver",
    "parse_receivers",
]

#: PagerDuty integration keys are exactly this long (Events API v2 ``routing_key``).
PAGERDUTY_KEY_LENGTH: Final = 32


def _check_url(receiver: str, name: str, url: str, *, secret: bool = False) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        shown = f"scheme {parts.scheme!r}" if secret and parts is not None else repr(url)
        raise ConfigError(
            f"receiver {receiver!r}: {name}={shown}; expected an http:// or https:// URL"
        )


def _check_headers(receiver: _ReceiverBase, headers: Any) -> None:
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(f"receiver {receiver.name!r}: headers must map strings to strings")
    # A private copy, so that the caller mutating its dict cannot change a frozen config.
    object.__setattr__(receiver, "headers", dict(headers))


@dataclass(frozen=True, kw_only=True)
class _ReceiverBase:
    """Settings every receiver has: identity, severity filter and retry policy."""

    name: str
    min_severity: Severity = "info"
    #: One HTTP request, connect to last byte.
    timeout_s: float = 5.0
    #: First retry delay; doubled per failed attempt (with jitter) up to ``backoff_max_s``.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    #: A page must survive a receiver outage of minutes; an hour bounds how long a
    #: receiver gone for good pins queued alerts in memory before they become dead letters.
    give_up_after_s: float = 3600.0
    #: The label value sent for each severity (``[alerts] severity_labels`` by default).
    severity_labels: SeverityLabels = DEFAULT_SEVERITY_LABELS

    def __post_init__(self) -> None:
        """Reject values that would make delivery misbehave, naming the field."""
        if not isinstance(self.severity_labels, SeverityLabels):
            raise ConfigError(f"receiver {self.name!r}: severity_labels must be a table")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"receiver name={self.name!r}; expected a non-empty string")
        if self.min_severity not in SEVERITY_RANK:
            raise ConfigError(
                f"receiver {self.name!r}: min_severity={self.min_severity!r}; "
                "expected one of: page, ticket, info"
            )
        for key in ("timeout_s", "backoff_initial_s", "backoff_max_s", "give_up_after_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0
            ):
                raise ConfigError(
                    f"receiver {self.name!r}: {key}={value!r}; "
                    "expected a finite number of seconds > 0"
                )
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"receiver {self.name!r}: backoff_max_s={self.backoff_max_s!r} is below "
                f"backoff_initial_s={self.backoff_initial_s!r}"
            )

    def admits(self, severity: str) -> bool:
        """True if an alert of ``severity`` is at least this receiver's ``min_severity``."""
        return SEVERITY_RANK.get(severity, -1) >= SEVERITY_RANK[self.min_severity]


@dataclass(frozen=True, kw_only=True)
class AlertmanagerReceiver(_ReceiverBase):
    """A Prometheus Alertmanager; alerts are POSTed in batches to ``{url}/api/v2/alerts``."""

    url: str
    min_severity: Severity = "ticket"
    #: Alertmanager resolves an alert by itself at ``endsAt`` unless it is re-sent; the
    #: documented client behaviour is to re-send active alerts every 30 s to 3 min.
    resend_s: float = 30.0
    #: Alerts per POST: one request carries a burst without an unbounded body.
    batch_max: int = 64
    #: Sent with every request: ``Authorization`` for an Alertmanager behind an
    #: authenticating proxy (basic auth or a bearer token); kept out of repr.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)

    def __post_init__(self) -> None:
        """Validate the common settings, the URL, ``resend_s``, ``batch_max``, headers."""
        super().__post_init__()
        _check_url(self.name, "url", self.url)
        _check_headers(self, self.headers)
        if isinstance(self.resend_s, bool) or not isinstance(self.resend_s, int | float) or not (
            math.isfinite(self.resend_s) and self.resend_s > 0
        ):
            raise ConfigError(
                f"receiver {self.name!r}: resend_s={self.resend_s!r}; "
                "expected a finite number of seconds > 0"
            )
        if isinstance(self.batch_max, bool) or not isinstance(self.batch_max, int) or not (
            1 <= self.batch_max <= 10_000
        ):
            raise ConfigError(
                f"receiver {self.name!r}: batch_max={self.batch_max!r}; "
                "expected an integer in 1..10000"
            )

    @property
    def endpoint(self) -> str:
        """The URL alerts are POSTed to."""
        return f"{self.url.rstrip('/')}/api/v2/alerts"


@dataclass(frozen=True, kw_only=True)
class PagerDutyReceiver(_ReceiverBase):
    """A PagerDuty service, through the Events API v2 (one event per alert state)."""

    routing_key: str = field(repr=False)
    url: str = "https://events.pagerduty.com/v2/enqueue"
    min_severity: Severity = "page"

    def __post_init__(self) -> None:
        """Validate the common settings, the URL, the key's length, the severity labels."""
        super().__post_init__()
        _check_url(self.name, "url", self.url)
        self.severity_labels.check_pagerduty(self.name)
        key = self.routing_key
        if not isinstance(key, str) or len(key) != PAGERDUTY_KEY_LENGTH:
            got = f"{len(key)} characters" if isinstance(key, str) else type(key).__name__
            raise ConfigError(
                f"receiver {self.name!r}: routing_key has {got}; expected the "
                f"{PAGERDUTY_KEY_LENGTH}-character integration key"
            )

    @property
    def endpoint(self) -> str:
        """The URL events are POSTed to."""
        return self.url


@dataclass(frozen=True, kw_only=True)
class WebhookReceiver(_ReceiverBase):
    """Any HTTP endpoint taking trainguard's own JSON (``{"version": "1", "alert": ...}``)."""

    url: str
    #: Sent with every request (an ``Authorization`` token, typically): kept out of repr.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)

    def __post_init__(self) -> None:
        """Validate the common settings, the URL and that headers are strings."""
        super().__post_init__()
        _check_url(self.name, "url", self.url)
        _check_headers(self, self.headers)

    @property
    def endpoint(self) -> str:
        """The URL alerts are POSTed to."""
        return self.url


@dataclass(frozen=True, kw_only=True)
class SlackReceiver(_ReceiverBase):
    """A Slack channel, through an incoming webhook (whose URL is the secret)."""

    url: str = field(repr=False)
    min_severity: Severity = "ticket"

    def __post_init__(self) -> None:
        """Validate the common settings and the webhook URL, without printing it."""
        super().__post_init__()
        _check_url(self.name, "url", self.url, secret=True)

    @property
    def endpoint(self) -> str:
        """The URL messages are POSTed to."""
        return self.url


ReceiverConfig = AlertmanagerReceiver | PagerDutyReceiver | WebhookReceiver | SlackReceiver

_TYPES: Final[dict[str, type[ReceiverConfig]]] = {
    "alertmanager": AlertmanagerReceiver,
    "pagerduty": PagerDutyReceiver,
    "webhook": WebhookReceiver,
    "slack": SlackReceiver,
}


def parse_receivers(
    table: list[dict[str, Any]],
    *,
    severity_labels: SeverityLabels = DEFAULT_SEVERITY_LABELS,
    environ: Mapping[str, str] | None = None,
) -> tuple[ReceiverConfig, ...]:
    """Build receivers from a list of tables, each with ``type`` and ``name``.

    ``severity_labels`` is every receiver's default (a receiver's own table goes over
    it); ``environ`` is where ``*_env`` secrets and ``$CREDENTIALS_DIRECTORY`` are read.
    Unknown types or keys, missing required keys, a secret given twice or unreadable, and
    duplicate names raise :class:`ConfigError` naming the entry (by name, or by position).
    """
    if not isinstance(table, list):
        raise ConfigError(f"receivers={type(table).__name__}; expected a list of tables")
    out: list[ReceiverConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(table):
        where = f"receivers[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}={type(entry).__name__}; expected a table")
        if "name" in entry:
            where = f"{where} (name={entry['name']!r})"
        receiver = _receiver(entry, where, severity_labels, environ or {})
        if receiver.name in seen:
            raise ConfigError(f"{where}: duplicate receiver name {receiver.name!r}")
        seen.add(receiver.name)
        out.append(receiver)
    return tuple(out)


def _receiver(entry: dict[str, Any], where: str, severity_labels: SeverityLabels,
              environ: Mapping[str, str]) -> ReceiverConfig:
    kind = entry.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None or not isinstance(kind, str):
        raise ConfigError(f"{where}: type={kind!r}; expected one of: {', '.join(_TYPES)}")
    allowed = {f.name for f in fields(cls)}
    secret_keys = {f"{k}_{s}" for k in SECRET_KEYS[kind] for s in ("file", "env")}
    if "headers" in allowed:
        secret_keys |= {"header_files", "header_env"}
    unknown = sorted(set(entry) - allowed - secret_keys - {"type"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for type {kind!r}; "
            f"expected some of: {', '.join(sorted(allowed | secret_keys))}"
        )
    try:
        kwargs = resolve_secrets({k: v for k, v in entry.items() if k != "type"}, kind,
                                 where=where, environ=environ)
        kwargs["severity_labels"] = severity_labels_from(
            kwargs.get("severity_labels", {}), severity_labels,
            where=f"{where}: severity_labels")
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{where}: {exc}") from None
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None
