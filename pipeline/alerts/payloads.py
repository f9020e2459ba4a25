"""Request bodies for each receiver, built from an :class:`Alert` by pure functions.

Each follows the receiver's published format. The alert's severity (``page``/``ticket``/
``info``) is sent as the receiver's ``severity_labels`` value for it (``critical``/
``warning``/``info`` by default), which is what routing trees and PagerDuty expect; the
alert record itself keeps trainguard's value.

* Alertmanager API v2 ``postableAlerts``: a list of ``{labels, annotations, startsAt,
  endsAt, generatorURL}`` with string maps and RFC 3339 times. The alert's fingerprint is
  a label, so each trainguard alert is exactly one Alertmanager alert. ``severity`` is the
  mapped value; ``trainguard_severity`` keeps trainguard's own.
* PagerDuty Events API v2: ``trigger`` events with a ``payload`` (summary at most 1024
  characters, severity one of critical/error/warning/info), ``resolve`` events with just
  the routing key and ``dedup_key``; the fingerprint is the ``dedup_key``.
* Slack incoming webhooks: fallback ``text`` plus mrkdwn ``section`` blocks (each at most
  3000 characters), with resolved messages visibly different from firing ones.
* Generic webhook: ``{"version": "1", "severity_label": <mapped>, "alert": <the alert as
  JSON>}``.

``now`` (wall-clock epoch seconds) is passed in, never read, so the output is a function
of the arguments alone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from trainguard.pipeline.alerts.receivers import (
    AlertmanagerReceiver,
    PagerDutyReceiver,
    ReceiverConfig,
    SlackReceiver,
    WebhookReceiver,
)
from trainguard.schemas.records import Alert

__all__ = [
    "PAGERDUTY_SEVERITY",
    "alertmanager_alert",
    "alertmanager_body",
    "build_body",
    "pagerduty_event",
    "rfc3339",
    "slack_message",
    "webhook_body",
]

#: trainguard severity -> PagerDuty ``payload.severity`` with the default severity labels.
PAGERDUTY_SEVERITY: Final = {"page": "critical", "ticket": "warning", "info": "info"}
#: Published limits: PagerDuty summary and dedup_key, Slack section text.
PAGERDUTY_SUMMARY_MAX: Final = 1024
PAGERDUTY_DEDUP_MAX: Final = 255
SLACK_SECTION_MAX: Final = 3000
#: Alertmanager (and Prometheus) label names outside UTF-8 mode.
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def rfc3339(ts: float) -> str:
    """Epoch seconds as an RFC 3339 / ISO 8601 UTC time with milliseconds."""
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(v: float | str | None) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))  # epoch seconds and counts read better without ".0"
    return "none" if v is None else str(v)


def _evidence_lines(alert: Alert) -> str:
    return "\n".join(f"{k}={_value(v)}" for k, v in alert.evidence.items())


def _label_name(name: str) -> str:
    if _LABEL_NAME.fullmatch(name):
        return name
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return fixed if _LABEL_NAME.fullmatch(fixed) else f"_{fixed}"


# -- Alertmanager ------------------------------------------------------------------------


def alertmanager_alert(alert: Alert, receiver: AlertmanagerReceiver, now: float) -> dict[str, Any]:
    """One ``postableAlert``: labels identify it, annotations describe it.

    A firing alert's ``endsAt`` is ``now + 4 * resend_s``: far enough that a re-send
    or two may be late, near enough that Alertmanager resolves it by itself should
    trainguard vanish. A resolved alert ends at its ``ends_at`` (never in the future).
    """
    labels: dict[str, str] = {"alertname": alert.check}
    for name, value in alert.labels.items():
        if value:  # an empty label value means "no label" to Alertmanager
            labels[_label_name(name)] = value
    # What routing trees route on; trainguard's own value stays beside it.
    labels["severity"] = receiver.severity_labels.label(alert.severity)
    labels["trainguard_severity"] = alert.severity
    labels.setdefault("cluster", alert.cluster)
    labels["fingerprint"] = alert.fingerprint
    # Each episode its own Alertmanager alert: a fault that returns after its resolve
    # would otherwise re-enter the old group and wait for its next flush (group_interval).
    labels["alert_id"] = alert.alert_id
    if alert.rank is not None:
        labels["rank"] = str(alert.rank)
    if alert.gpu_index is not None:
        labels["gpu"] = str(alert.gpu_index)
    first = alert.evidence.get("first_seen")
    last = alert.evidence.get("last_seen")
    annotations = {
        "summary": alert.summary,
        "description": _evidence_lines(alert),
        "runbook_url": alert.runbook_url or "",
        "dashboard_url": alert.dashboard_url or "",
        "alert_id": alert.alert_id,
        "first_seen": rfc3339(first if isinstance(first, float | int) else alert.starts_at),
        "last_seen": rfc3339(last if isinstance(last, float | int) else alert.ts),
    }
    starts = min(alert.starts_at, now)
    if alert.status == "firing":
        ends = now + 4 * receiver.resend_s
    else:
        ends = min(alert.ends_at if alert.ends_at is not None else now, now)
    body: dict[str, Any] = {
        "labels": labels,
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": rfc3339(starts),
        # Alertmanager rejects an alert that ends before it starts.
        "endsAt": rfc3339(max(ends, starts)),
    }
    if alert.dashboard_url:
        body["generatorURL"] = alert.dashboard_url
    return body


def alertmanager_body(
    alerts: Sequence[Alert], receiver: AlertmanagerReceiver, now: float
) -> list[dict[str, Any]]:
    """The ``postableAlerts`` array for one POST to ``/api/v2/alerts``."""
    return [alertmanager_alert(a, receiver, now) for a in alerts]


# -- PagerDuty ---------------------------------------------------------------------------


def _dedup_key(fingerprint: str) -> str:
    if len(fingerprint) <= PAGERDUTY_DEDUP_MAX:
        return fingerprint
    return hashlib.sha256(fingerprint.encode()).hexdigest()  # stable, and within the limit


def pagerduty_event(alert: Alert, receiver: PagerDutyReceiver, now: float) -> dict[str, Any]:
    """A ``trigger`` event for a firing alert, a ``resolve`` event for a resolved one.

    The ``dedup_key`` is the fingerprint: re-sends of the same state land on the same
    PagerDuty alert, and a later episode opens a new one once the earlier was resolved.
    """
    base = {
        "routing_key": receiver.routing_key,
        "dedup_key": _dedup_key(alert.fingerprint),
    }
    if alert.status == "resolved":
        return {**base, "event_action": "resolve"}
    payload: dict[str, Any] = {
        "summary": _truncate(alert.summary or alert.check, PAGERDUTY_SUMMARY_MAX),
        "source": alert.node or alert.job_id or alert.cluster,
        "severity": receiver.severity_labels.label(alert.severity),
        "timestamp": rfc3339(alert.ts),
        "component": alert.check,
        "custom_details": {
            "alert_id": alert.alert_id,
            "fingerprint": alert.fingerprint,
            "cluster": alert.cluster,
            "job_id": alert.job_id,
            "node": alert.node,
            "rank": alert.rank,
            "gpu_index": alert.gpu_index,
            "started_at": rfc3339(alert.starts_at),
            "evidence": dict(alert.evidence),
            "labels": dict(alert.labels),
        },
    }
    if alert.job_id:
        payload["group"] = alert.job_id
    if alert.labels.get("category"):
        payload["class"] = alert.labels["category"]
    links = [
        {"href": url, "text": text}
        for url, text in ((alert.dashboard_url, "Dashboard"), (alert.runbook_url, "Runbook"))
        if url
    ]
    event: dict[str, Any] = {**base, "event_action": "trigger", "payload": payload}
    if links:
        event["links"] = links
    event["client"] = "trainguard"
    if alert.dashboard_url:
        event["client_url"] = alert.dashboard_url
    return event


# -- Slack -------------------------------------------------------------------------------


def _esc(text: str) -> str:
    # Slack reads &, < and > as markup ("<!channel>" would ping everyone).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, text: str) -> str:
    safe = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe}|{text}>"


def _duration(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def slack_message(alert: Alert, receiver: SlackReceiver, now: float) -> dict[str, Any]:
    """An incoming-webhook message: fallback ``text`` and mrkdwn sections.

    Firing: a coloured marker, the severity and the summary. Resolved: a check mark,
    the summary struck through and how long it lasted, so the two never look alike.
    """
    where = " ".join(
        f"*{k}* `{_esc(str(v))}`"
        for k, v in (
            ("cluster", alert.cluster), ("job", alert.job_id), ("node", alert.node),
            ("rank", alert.rank), ("gpu", alert.gpu_index),
        )
        if v is not None
    )
    summary = _esc(alert.summary or alert.check)
    if alert.status == "firing":
        mark = {"page": ":red_circle:", "ticket": ":large_orange_circle:"}.get(
            alert.severity, ":large_blue_circle:"
        )
        label = receiver.severity_labels.label(alert.severity)
        head = f"{mark} *FIRING* ({_esc(label)}) `{_esc(alert.check)}`"
        text = f"[FIRING {label}] {alert.check}: {alert.summary}"
        body = summary
    else:
        ended = alert.ends_at if alert.ends_at is not None else now
        head = f":white_check_mark: *RESOLVED* `{_esc(alert.check)}`"
        text = f"[RESOLVED] {alert.check}: {alert.summary}"
        body = f"~{summary}~\nresolved after {_duration(ended - alert.starts_at)}"
    blocks: list[dict[str, Any]] = [
        _section(f"{head}\n{body}"),
        _section(where),
    ]
    evidence = _evidence_lines(alert)
    if evidence:
        blocks.append(_section(f"```{_esc(evidence)}```"))
    links = [
        _link(url, name)
        for url, name in ((alert.runbook_url, "Runbook"), (alert.dashboard_url, "Dashboard"))
        if url
    ]
    links.append(f"alert `{_esc(alert.alert_id)}`")
    blocks.append(_section(" · ".join(links)))
    return {"text": _esc(_truncate(text, SLACK_SECTION_MAX)), "blocks": blocks}


def _section(text: str) -> dict[str, Any]:
    text = _truncate(text, SLACK_SECTION_MAX)
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# -- generic webhook ---------------------------------------------------------------------


def webhook_body(alert: Alert, receiver: WebhookReceiver, now: float) -> dict[str, Any]:
    """The generic format: a version, the mapped severity and the alert as on the wire."""
    return {"version": "1", "severity_label": receiver.severity_labels.label(alert.severity),
            "alert": msgspec.to_builtins(alert)}


def build_body(receiver: ReceiverConfig, alerts: Sequence[Alert], now: float) -> Any:
    """The JSON body of one request to ``receiver`` carrying ``alerts``.

    Only Alertmanager takes several alerts per request; the others take exactly one.
    """
    if isinstance(receiver, AlertmanagerReceiver):
        return alertmanager_body(alerts, receiver, now)
    if len(alerts) != 1:
        kind = type(receiver).__name__
        raise ValueError(f"{kind} takes one alert per request, got {len(alerts)}")
    alert = alerts[0]
    if isinstance(receiver, PagerDutyReceiver):
        return pagerduty_event(alert, receiver, now)
    if isinstance(receiver, SlackReceiver):
        return slack_message(alert, receiver, now)
    return webhook_body(alert, receiver, now)
