"""Alert history read back from the store: open alerts, recent episodes, deliveries made.

The ``alerts`` table holds every state change (firing, resolved) of every alert, so
"the state of an alert" is its latest row: per fingerprint for what is open now, per
``alert_id`` for each episode. Rows are rebuilt into :class:`trainguard.schemas.records.Alert`,
evidence and labels included, so that a restarted worker or the CLI sees what the
lifecycle emitted. ``alert_deliveries`` tells which state changes a receiver already
accepted, so that a restart does not page twice.

Empty text columns (``job_id``, ``node``, the URLs) come back as None, as in the record
before it was stored. ``since`` is Unix epoch seconds (UTC), compared with a row's ``ts``.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from trainguard.errors import ConfigError, StoreError
from trainguard.pipeline.store.base import Store
from trainguard.schemas.records import Alert

__all__ = ["delivered_keys", "open_alerts", "recent_alerts"]

_COLUMNS = (
    "cluster, alert_id, fingerprint, status, severity, check, summary, "
    "toUnixTimestamp64Milli(ts) AS ts_ms, toUnixTimestamp64Milli(starts_at) AS starts_ms, "
    "toUnixTimestamp64Milli(ends_at) AS ends_ms, job_id, node, rank, gpu, evidence, labels, "
    "runbook_url, dashboard_url"
)
# At one instant a resolution ranks above the firing of the same episode; a new episode
# (later start) ranks above the resolution of the one before, which may end at its start.
_LATEST_FIRST = "ts DESC, starts_at DESC, status = 'resolved' DESC"


def open_alerts(store: Store, since: float) -> list[Alert]:
    """The alerts whose latest state change at or after ``since`` is firing, oldest first.

    Only state changes are stored, so an alert that has been firing since before
    ``since`` without changing is not among them: look back as far as alerts last.
    """
    sql = (
        f"SELECT * FROM (SELECT {_COLUMNS} FROM {{database}}.alerts "
        f"WHERE ts >= {_instant('since', since)} "
        f"ORDER BY fingerprint, {_LATEST_FIRST} LIMIT 1 BY fingerprint) "
        "WHERE status = 'firing' ORDER BY starts_ms, fingerprint"
    )
    return [_alert(row) for row in store.query(sql).dicts()]


def recent_alerts(store: Store, since: float, limit: int) -> list[Alert]:
    """The latest state of each episode (``alert_id``) changed since ``since``, newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit={limit!r}; expected an integer >= 1")
    sql = (
        f"SELECT * FROM (SELECT {_COLUMNS} FROM {{database}}.alerts "
        f"WHERE ts >= {_instant('since', since)} "
        f"ORDER BY alert_id, {_LATEST_FIRST} LIMIT 1 BY alert_id) "
        f"ORDER BY ts_ms DESC, alert_id LIMIT {limit}"
    )
    return [_alert(row) for row in store.query(sql).dicts()]


def delivered_keys(store: Store, since: float) -> list[tuple[str, str, str]]:
    """``(receiver, alert_id, status)`` of every delivery that succeeded since ``since``."""
    sql = (
        "SELECT DISTINCT receiver, alert_id, status FROM {database}.alert_deliveries "
        f"WHERE outcome = 'delivered' AND ts >= {_instant('since', since)} "
        "ORDER BY receiver, alert_id, status"
    )
    return [(str(r), str(a), str(s)) for r, a, s in store.query(sql).rows]


def _instant(name: str, t: float) -> str:
    if isinstance(t, bool) or not isinstance(t, int | float) or not (math.isfinite(t) and t >= 0):
        raise ConfigError(f"{name}={t!r}; expected Unix epoch seconds >= 0")
    return f"toDateTime64({float(t)!r}, 3, 'UTC')"


def _alert(row: dict[str, Any]) -> Alert:
    ends_ms = row["ends_ms"]
    try:
        evidence = msgspec.json.decode(row["evidence"] or "{}")
        return msgspec.convert(
            {
                "alert_id": row["alert_id"],
                "fingerprint": row["fingerprint"],
                "status": row["status"],
                "severity": row["severity"],
                "check": row["check"],
                "summary": row["summary"],
                "cluster": row["cluster"],
                # 64-bit integers come back as JSON strings (ClickHouse quotes them).
                "ts": int(row["ts_ms"]) / 1000,
                "starts_at": int(row["starts_ms"]) / 1000,
                "ends_at": int(ends_ms) / 1000 if ends_ms is not None else None,
                "job_id": row["job_id"] or None,
                "node": row["node"] or None,
                "rank": row["rank"],
                "gpu_index": row["gpu"],
                "evidence": evidence,
                "labels": row["labels"],
                "runbook_url": row["runbook_url"] or None,
                "dashboard_url": row["dashboard_url"] or None,
            },
            type=Alert,
        )
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise StoreError(
            f"alerts row {row.get('alert_id')!r} ({row.get('status')}) is not a valid alert: {exc}"
        ) from None
