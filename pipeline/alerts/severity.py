"""trainguard's severities and the label values receivers see for them.

Inside trainguard (the ``alerts`` topic and table, ``min_severity``, the CLI) an alert's
severity is ``page``, ``ticket`` or ``info``. Existing Alertmanager routing trees
(kube-prometheus and most others) and PagerDuty route on ``critical`` / ``warning`` /
``info``, so what leaves trainguard for a receiver carries the *mapped* value:
:class:`SeverityLabels` says which, with those defaults, and is configured in the worker's
TOML (``[alerts] severity_labels``, overridable per receiver)::

    [alerts]
    severity_labels = { page = "critical", ticket = "warning", info = "info" }
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal

from trainguard.errors import ConfigError

__all__ = [
    "DEFAULT_SEVERITY_LABELS",
    "PAGERDUTY_SEVERITIES",
    "SEVERITY_RANK",
    "Severity",
    "SeverityLabels",
    "severity_labels_from",
]

Severity = Literal["page", "ticket", "info"]

#: Higher is more urgent; a receiver admits alerts whose rank is >= its ``min_severity``'s.
SEVERITY_RANK: Final[Mapping[str, int]] = {"info": 0, "ticket": 1, "page": 2}

#: The only values PagerDuty's Events API v2 accepts in ``payload.severity``.
PAGERDUTY_SEVERITIES: Final = ("critical", "error", "warning", "info")

#: A label value that routes cleanly in any routing tree and reads well in a message.
_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")


@dataclass(frozen=True)
class SeverityLabels:
    """The label value sent for each trainguard severity; validated on construction."""

    page: str = "critical"
    ticket: str = "warning"
    info: str = "info"

    def __post_init__(self) -> None:
        """Reject empty or odd label values, naming the severity."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str) or not _VALUE.fullmatch(value):
                raise ConfigError(
                    f"severity_labels.{f.name}={value!r}; expected a label value of letters, "
                    "digits, '_', '.', ':' or '-' (e.g. critical, warning, info)"
                )

    def label(self, severity: str) -> str:
        """The label value for trainguard ``severity`` (unknown ones pass through)."""
        return str(getattr(self, severity)) if severity in SEVERITY_RANK else severity

    def check_pagerduty(self, receiver: str) -> None:
        """Raise :class:`ConfigError` unless every value is one PagerDuty accepts."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in PAGERDUTY_SEVERITIES:
                raise ConfigError(
                    f"receiver {receiver!r}: severity_labels.{f.name}={value!r}; PagerDuty "
                    f"accepts only: {', '.join(PAGERDUTY_SEVERITIES)}"
                )


#: ``critical`` pages, ``warning`` is a ticket, ``info`` is information.
DEFAULT_SEVERITY_LABELS: Final = SeverityLabels()


def severity_labels_from(table: Any, base: SeverityLabels = DEFAULT_SEVERITY_LABELS,
                         *, where: str = "severity_labels") -> SeverityLabels:
    """``base`` with the values in TOML ``table`` (some of page, ticket, info) over it."""
    if isinstance(table, SeverityLabels):
        return table
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}={type(table).__name__}; expected a table such as "
                          '{ page = "critical", ticket = "warning", info = "info" }')
    unknown = sorted(set(table) - {f.name for f in fields(SeverityLabels)})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                          "expected some of: info, page, ticket")
    return replace(base, **dict(table))
