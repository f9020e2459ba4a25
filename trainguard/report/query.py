"""A report's data: the job dashboard's panels, each one's SQL run for the incident.

:func:`job_dashboard` picks the dashboard, :func:`panel_variables` sets its variables
as the incident has them, and :func:`query_series` expands a panel's SQL with
:func:`trainguard.grafana.macros.expand` and returns one :class:`Series` per line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainguard.errors import ConfigError
from trainguard.grafana.macros import ALL, expand
from trainguard.grafana.model import Dashboard, Panel

if TYPE_CHECKING:
    from trainguard.pipeline.store.base import Store
    from trainguard.report.incident import Incident

__all__ = ["JOB_DASHBOARD_UID", "Series", "job_dashboard", "panel_variables", "query_series"]

#: The dashboard whose timeseries panels a report draws.
JOB_DASHBOARD_UID = "trainguard-job"
_NUMERIC = re.compile(r"(U?Int\d+|Float\d+|Decimal)")


@dataclass(frozen=True)
class Series:
    """One line of a panel: its name, epoch-second times and values (NaN: no value)."""

    label: str
    times: Sequence[float]
    values: Sequence[float]
    blamed: bool = False
    #: The query column the values come from (``loss``), for the axis label.
    column: str = ""


def job_dashboard(dashboards: Sequence[Dashboard] | None) -> Dashboard:
    """The dashboard with uid :data:`JOB_DASHBOARD_UID` among ``dashboards`` (default: all)."""
    if dashboards is None:
        try:
            from trainguard.grafana.dashboards import all_dashboards
        except ImportError as exc:
            raise ConfigError(
                f"trainguard report draws the job dashboard's panels, which are not "
                f"available: {exc}"
            ) from None
        dashboards = all_dashboards()
    for board in dashboards:
        if board.uid == JOB_DASHBOARD_UID:
            return board
    uids = ", ".join(b.uid for b in dashboards) or "none"
    raise ConfigError(f"no dashboard with uid {JOB_DASHBOARD_UID!r}; got: {uids}")


def panel_variables(incident: Incident, panel: Panel, board: Dashboard) -> dict[str, str]:
    """The dashboard's variables for ``panel``: the job pinned, node and rank as it fits.

    A panel that compares series (``series`` set) gets node and rank unpinned: filtered
    to the blamed node it would lose the peers the blamed line is to be seen against.
    Variables the incident knows nothing of are "All", as a dashboard opens.
    """
    compare = panel.series is not None

    def pin(value: object) -> str:
        return ALL if value is None or compare else str(value)

    return {
        **{v.name: ALL for v in board.variables},
        "job": incident.job_id or ALL, "cluster": incident.cluster or ALL,
        "node": pin(incident.node), "rank": pin(incident.rank),
    }


def query_series(
    store: Store, panel: Panel, incident: Incident, variables: dict[str, str]
) -> list[Series]:
    """Run ``panel``'s SQL for the incident; one :class:`Series` per (series, value column).

    The time column (first, as the plugin's time_series format has it) is converted to
    epoch milliseconds in SQL, so the result does not depend on the session's timezone.
    """
    # About one point per two pixels, at least one per second.
    interval_s = max(1, math.ceil((incident.end - incident.start) / 600))
    sql = expand(
        panel.sql, start=incident.start, end=incident.end, variables=variables,
        database=store.database, interval_s=interval_s,
    ).strip().rstrip(";")
    types = {str(r[0]): str(r[1]) for r in store.query(f"DESCRIBE ({sql})").rows}
    names = list(types)
    if not names or not re.match(r"(Nullable\()?(DateTime|Date)", types[names[0]]):
        raise ConfigError(f"panel {panel.title!r}: first column is not a time: {types}")
    key = panel.series if panel.series in types else None
    if panel.series is not None and key is None:
        raise ConfigError(f"panel {panel.title!r}: series column {panel.series!r} not in {names}")
    values = [n for n in names[1:] if n != key and _NUMERIC.search(types[n])]
    time_ms = f"toUnixTimestamp64Milli(toDateTime64({_ident(names[0])}, 3, 'UTC'))"
    rows = store.query(f"SELECT {time_ms} AS __tg_ms, * FROM ({sql})").dicts()
    blamed = incident.blamed(key) if key is not None else frozenset()
    lines: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for row in rows:
        group = "" if key is None else str(row[key])
        for col in values:
            t, y = lines.setdefault((group, col), ([], []))
            t.append(int(row["__tg_ms"]) / 1000)
            y.append(math.nan if row[col] is None else float(row[col]))
    out = []
    for (group, col), (t, y) in sorted(lines.items(), key=lambda kv: _order(kv[0])):
        if all(math.isnan(v) for v in y):
            continue  # a column the job does not report: no line, not a "drawn" blamed one
        name = _label(key, group) if key is not None else col
        label = f"{name} {col}" if key is not None and len(values) > 1 else name
        out.append(Series(label, t, y, blamed=group in blamed, column=col))
    return out


def _label(column: str, value: str) -> str:
    # "rank 6", "gpu 2"; a node is already named like one ("node-03").
    return value if value.lower().startswith(column.lower()) else f"{column} {value}"


def _order(key: tuple[str, str]) -> tuple[int, float, str, str]:
    group, col = key
    try:
        return 0, float(group), group, col  # ranks sort 2 before 10
    except ValueError:
        return 1, 0.0, group, col


def _ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
