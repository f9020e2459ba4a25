"""What a report is about: the alert or job, its time range, and whom it blames.

:func:`alert_incident` reads an alert (and, while it fires, its finding) from the store;
:func:`job_incident` takes a job and a time range. Both find the blamed ranks: the
alert's one, a finding's several, or those of the job on the blamed node.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.history import _COLUMNS, _LATEST_FIRST, _alert
from trainguard.pipeline.alerts.lifecycle import DASHBOARD_MARGIN_S
from trainguard.pipeline.store.base import require_table
from trainguard.report.draw import MAX_SERIES
from trainguard.schemas.records import Alert

if TYPE_CHECKING:
    from trainguard.pipeline.store.base import Store

__all__ = ["Incident", "alert_incident", "job_incident"]


@dataclass(frozen=True)
class Incident:
    """What a report is about: a time range, the job, and whom the alert blames."""

    title: str
    start: float
    end: float
    job_id: str | None = None
    cluster: str | None = None
    node: str | None = None
    rank: int | None = None
    gpu: int | None = None
    #: When the fault was first seen and last seen, and when the alert resolved.
    first_seen: float | None = None
    last_seen: float | None = None
    resolved_at: float | None = None
    alert: Alert | None = None
    #: Every blamed rank: the alert's one, a finding's several, or those on the blamed node.
    ranks: tuple[int, ...] = ()

    def blamed(self, column: str) -> frozenset[str]:
        """The blamed values of a panel's series column (``rank``, ``node``, ``device``...)."""
        one = {"node": self.node, "gpu": self.gpu,
               "device": f"{self.node}:{self.gpu}" if self.gpu is not None else None}
        if column == "rank":
            return frozenset(map(str, self.ranks))
        value = one.get(column)
        return frozenset() if value is None else frozenset({str(value)})


def alert_incident(store: Store, alert_id: str) -> Incident:
    """The incident of alert ``alert_id``: first seen - 5 min .. (resolved or last seen) + 5 min.

    Raises :class:`ConfigError` for an unknown alert.
    """
    require_table(store, "alerts")
    rows = store.query(
        f"SELECT {_COLUMNS} FROM {{database}}.alerts WHERE alert_id = {_literal(alert_id)} "
        f"ORDER BY {_LATEST_FIRST} LIMIT 1"
    ).dicts()
    if not rows:
        raise ConfigError(
            f"no alert {alert_id!r} in the store's alerts table; "
            "`trainguard alerts --all` lists recent alert ids"
        )
    alert = _alert(rows[0])
    ev = alert.evidence
    first = min(_num(ev.get("first_seen"), alert.starts_at), alert.starts_at)
    last = _num(ev.get("last_seen"), alert.starts_at)
    finding_id = ev.get("finding_id")
    if alert.status == "firing" and isinstance(finding_id, str):
        # Only state changes are stored: the finding knows how long the fault went on.
        last = max(last, _finding_last_seen(store, finding_id) or last)
    resolved = alert.ends_at if alert.status == "resolved" else None
    start, end = first - DASHBOARD_MARGIN_S, (resolved or last) + DASHBOARD_MARGIN_S
    listed = ev.get("ranks")
    if alert.rank is not None:
        ranks: tuple[int, ...] = (alert.rank,)
    elif isinstance(listed, str) and re.fullmatch(r"\d+(,\d+)*", listed):
        ranks = tuple(int(r) for r in listed.split(","))
    else:
        ranks = _ranks_on(store, alert.job_id, alert.node, start, end)
    if len(ranks) > MAX_SERIES // 4:
        ranks = ()  # a job-wide fault: there is no one to single out
    return Incident(
        title=f"{alert.severity} {alert.check}: {alert.summary}", start=start, end=end,
        job_id=alert.job_id, cluster=alert.cluster, node=alert.node, rank=alert.rank,
        gpu=alert.gpu_index, first_seen=first, last_seen=last, resolved_at=resolved, alert=alert,
        ranks=ranks,
    )


def job_incident(
    store: Store, job_id: str, start: float, end: float, node: str | None, rank: int | None
) -> Incident:
    """The incident of ``job_id`` in ``start``..``end``, blaming ``rank`` or ``node``'s ranks.

    Raises :class:`ConfigError` for a bad time range.
    """
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise ConfigError(f"time range {start!r}..{end!r}; expected 0 <= start < end")
    require_table(store, "steps")
    cluster = store.query(
        f"SELECT any(cluster) FROM {{database}}.steps WHERE job_id = {_literal(job_id)}"
    ).scalar()
    ranks = (rank,) if rank is not None else _ranks_on(store, job_id, node, start, end)
    return Incident(title=f"job {job_id}", start=start, end=end, job_id=job_id,
                    cluster=cluster or None, node=node, rank=rank, ranks=ranks)


def _ranks_on(
    store: Store, job_id: str | None, node: str | None, start: float, end: float
) -> tuple[int, ...]:
    """The ranks of ``job_id`` on ``node`` in the range: a blamed node blames them."""
    if job_id is None or node is None:
        return ()
    rows = store.query(
        f"SELECT DISTINCT rank FROM {{database}}.steps WHERE job_id = {_literal(job_id)} "
        f"AND node = {_literal(node)} AND ts >= toDateTime64({start!r}, 3, 'UTC') "
        f"AND ts <= toDateTime64({end!r}, 3, 'UTC') ORDER BY rank"
    ).rows
    return tuple(int(r[0]) for r in rows)


def _finding_last_seen(store: Store, finding_id: str) -> float | None:
    ms = store.query(
        "SELECT toUnixTimestamp64Milli(maxOrNull(greatest(last_seen, ifNull(cleared_at, "
        f"last_seen)))) FROM {{database}}.findings WHERE finding_id = {_literal(finding_id)}"
    ).scalar()
    return None if ms is None else int(ms) / 1000  # 64-bit integers arrive as strings




def _num(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) else default


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
