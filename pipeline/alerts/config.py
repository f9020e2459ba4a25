"""The alert lifecycle's thresholds and silences: frozen objects, validated on construction.

Every default says why next to it. Times are event time (Unix epoch seconds, UTC), as on
the wire.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.matchers import Matcher

__all__ = [
    "ANOMALY_PATTERNS",
    "DEFAULT_MAX_INTEGRITY_SILENCE_S",
    "AlertLifecycleConfig",
    "Silence",
    "integrity_silence_violation",
]

#: The longest an integrity silence may last (start to end). A day covers a planned
#: change of the training code or of its checkpoints; evidence of sabotage must not
#: be muted for longer than someone is accountable for watching it by hand.
DEFAULT_MAX_INTEGRITY_SILENCE_S = 24 * 3600.0

#: The patterns a baseline anomaly can have (``Anomaly.pattern``).
ANOMALY_PATTERNS = ("spike", "level_shift", "drift")


@dataclass(frozen=True)
class AlertLifecycleConfig:
    """Every threshold of the alert lifecycle; validated on construction."""

    #: An alert resolves when no finding refreshed it for this long. Findings
    #: of a persisting fault are re-emitted every ``repeat_s`` (60 s by default), so two
    #: missed repeats are needed before an alert that is still true resolves.
    resolve_after_s: float = 120.0
    #: A finding that reports cleared resolves its alert this long after (event time)
    #: unless it fires again meanwhile: a signal flickering around its threshold stays one
    #: episode, one page (Prometheus calls this ``keep_firing_for``).
    clear_hold_s: float = 30.0
    #: An alert that fires again within this window of its earlier firings...
    flap_window_s: float = 600.0
    #: ...more often than this comes back as a ticket labelled flapping and is held firing,
    #: instead of paging again: the first page told on-call; a GPU that keeps dropping out
    #: must not wake them every minute.
    max_flaps: int = 1
    #: At most this many new page-severity alerts per job per ``job_rate_window_s``; beyond
    #: that they are created as tickets labelled ``rate_limited="true"``. A job failing in
    #: many places at once is one incident; five pages already wake someone up.
    job_rate_limit: int = 5
    job_rate_window_s: float = 300.0
    #: ``runbook_url`` is ``{runbook_base_url}/{check}``, or the base with ``{check}``
    #: replaced when it has one (``https://git.example/tg/blob/main/docs/runbooks/{check}.md``).
    runbook_base_url: str = "https://trainguard.example/runbooks"
    #: When set, alerts carry a Grafana link with job, node and time range filled in.
    dashboard_base_url: str = ""
    #: Alerts tracked at once (firing, or resolved within ``flap_window_s``); beyond it the
    #: least recently active is forgotten and counted. Only a cluster failing everywhere
    #: reaches it; the bound keeps a worker's memory finite then.
    max_alerts: int = 100_000
    #: A silence may mute integrity findings only with a reason, a creator and an end at
    #: most this long after its start (:func:`integrity_silence_violation`); otherwise it
    #: mutes the other categories only, and the worker logs and counts it.
    max_integrity_silence_s: float = DEFAULT_MAX_INTEGRITY_SILENCE_S
    #: Baseline anomalies of these patterns become ``ticket`` alerts (never pages): a level
    #: shift or a drift persists, so there is something to look at; a spike is over by the
    #: time it is reported, so it stays in the ``anomalies`` table. Empty: no such alerts.
    anomaly_patterns: tuple[str, ...] = ("level_shift", "drift")
    #: An anomaly is one event, never repeated while it lasts: its ticket stays open this
    #: long (event time), and another anomaly of the same metric meanwhile refreshes it.
    anomaly_resolve_after_s: float = 3600.0

    def __post_init__(self) -> None:
        """Reject values that would make the lifecycle misbehave, naming the field."""
        object.__setattr__(self, "anomaly_patterns", tuple(self.anomaly_patterns))
        unknown = sorted(set(self.anomaly_patterns) - set(ANOMALY_PATTERNS))
        if unknown:
            raise ConfigError(f"anomaly_patterns: unknown {', '.join(map(repr, unknown))}; "
                              f"expected some of: {', '.join(ANOMALY_PATTERNS)}")
        for name in ("resolve_after_s", "job_rate_window_s", "clear_hold_s",
                     "max_integrity_silence_s", "anomaly_resolve_after_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}={value!r}; expected a finite number of seconds > 0")
        if not (math.isfinite(self.flap_window_s) and self.flap_window_s >= 0):
            raise ConfigError(
                f"flap_window_s={self.flap_window_s!r}; expected a finite number of seconds >= 0"
            )
        for name in ("max_flaps", "job_rate_limit", "max_alerts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}; expected an integer >= 1")
        for name in ("runbook_base_url", "dashboard_base_url"):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"{name}={url!r}; expected an http:// or https:// URL")
        if not self.runbook_base_url:
            raise ConfigError("runbook_base_url is empty; expected an http(s) URL")


@dataclass(frozen=True)
class Silence:
    """Planned work: alerts of a job and/or node starting in ``[starts_at, ends_at)``.

    ``None`` for ``job_id`` or ``node`` matches any. ``matchers`` (amtool-like, see
    :mod:`~trainguard.pipeline.alerts.matchers`) narrow it further: all must hold, e.g.
    ``check=gpu_throttled`` with ``node="node-07"`` mutes one check on one node. A job, a
    node or an equality matcher on ``check``, ``job_id`` or ``node`` must be set, so a
    silence cannot quietly mute a whole cluster. Integrity findings (category
    ``integrity``: evidence of sabotage or corruption) are muted only by a silence with
    ``integrity`` set that also passes :func:`integrity_silence_violation`.
    ``created_by`` is who added it and ``updated_by`` who wrote this version (an expiry),
    both the operating-system user the CLI ran as.
    """

    silence_id: str
    job_id: str | None
    node: str | None
    starts_at: float
    ends_at: float
    reason: str
    created_by: str
    integrity: bool = False
    updated_by: str = ""
    matchers: tuple[Matcher, ...] = ()

    def __post_init__(self) -> None:
        """Reject a silence that matches everything or no time at all."""
        if not self.silence_id:
            raise ConfigError("silence_id is empty; expected a name")
        object.__setattr__(self, "matchers", tuple(self.matchers))
        scoped = any(m.scopes and m.name in ("check", "job_id", "node") for m in self.matchers)
        if self.job_id is None and self.node is None and not scoped:
            raise ConfigError(
                f"silence {self.silence_id!r} names neither job_id nor node nor a check "
                "(check=NAME); expected at least one"
            )
        if not self.ends_at > self.starts_at:
            raise ConfigError(
                f"silence {self.silence_id!r}: ends_at={self.ends_at!r} is not after "
                f"starts_at={self.starts_at!r}"
            )

    def matches(self, job_id: str | None, node: str | None, ts: float,
                fields: Mapping[str, str] | None = None) -> bool:
        """True if this silence covers an alert of ``job_id`` on ``node`` starting at ``ts``.

        ``fields`` are the alert's other matcher fields (``check``, ``cluster``,
        ``category``, ``rank``, ``gpu``); one it lacks is ''.
        """
        if not self.starts_at <= ts < self.ends_at:
            return False
        if self.job_id is not None and self.job_id != job_id:
            return False
        if self.node is not None and self.node != node:
            return False
        if not self.matchers:
            return True
        values = {**(fields or {}), "job_id": job_id or "", "node": node or ""}
        return all(m.matches(values) for m in self.matchers)


def integrity_silence_violation(silence: Silence, max_window_s: float) -> str | None:
    """Why ``silence`` may not mute integrity findings, or None if it may (or need not).

    The rule: a silence of integrity findings records why (``reason``) and who
    (``created_by``), and ends at most ``max_window_s`` after it starts.
    """
    if not silence.integrity:
        return None
    rule = (f"integrity silence rule: a silence of integrity findings needs a reason, a "
            f"creator and an end at most {max_window_s:g} s after its start "
            f"(max_integrity_silence_s)")
    if not silence.reason.strip():
        return f"{rule}; silence {silence.silence_id!r} has no reason"
    if not silence.created_by.strip():
        return f"{rule}; silence {silence.silence_id!r} has no creator"
    window = silence.ends_at - silence.starts_at
    if window > max_window_s:
        return f"{rule}; silence {silence.silence_id!r} lasts {window:g} s"
    return None
