"""Grafana dashboard JSON from the model: the files under ``infra/grafana/dashboards/``.

The JSON is Grafana's dashboard model (``schemaVersion`` 39, Grafana 10.4 and later) with
panels laid out left to right on the 24-column grid, and targets in the shape the
ClickHouse plugin (4.x) saves from its SQL editor: ``editorType: "sql"``, ``rawSql``, and
``format`` as the plugin's number (0 time series, 1 table, 2 logs) with the matching
``queryType``. Every panel and target names the data source by uid, so the same files
work in any Grafana that provisions ``infra/grafana/provisioning/datasources``.
Output is deterministic: the same model renders the same bytes (keys sorted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainguard.grafana.model import Dashboard, Panel, PanelKind, QueryFormat, Variable

__all__ = [
    "DATASOURCE_TYPE", "DATASOURCE_UID", "SCHEMA_VERSION", "dumps", "render", "write_all",
]

DATASOURCE_TYPE = "grafana-clickhouse-datasource"
#: The provisioned data source (``infra/grafana/provisioning/datasources/trainguard.yaml``).
DATASOURCE_UID = "trainguard-clickhouse"
SCHEMA_VERSION = 39
_GRID_WIDTH = 24
#: The plugin's ``Format`` enum and its ``QueryType`` for each.
_FORMATS: dict[QueryFormat, tuple[int, str]] = {
    "time_series": (0, "timeSeries"), "table": (1, "table"), "logs": (2, "logs"),
}
_LEGEND = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
#: Per visualization: panel ``options`` and ``fieldConfig.defaults`` beyond the unit.
_STYLE: dict[PanelKind, tuple[dict[str, Any], dict[str, Any]]] = {
    "timeseries": (
        {"legend": _LEGEND, "tooltip": {"mode": "multi", "sort": "desc"}},
        {"custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                    "showPoints": "never", "spanNulls": False}},
    ),
    "heatmap": (
        {"calculate": False, "cellGap": 1, "rowsFrame": {"layout": "auto"},
         "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
         "yAxis": {"axisPlacement": "left"}, "legend": {"show": True},
         "tooltip": {"mode": "single", "yHistogram": False}},
        {},
    ),
    "table": (
        {"showHeader": True, "cellHeight": "sm"},
        {"custom": {"align": "auto", "filterable": True, "cellOptions": {"type": "auto"}}},
    ),
    "stat": (
        {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
         "colorMode": "value", "graphMode": "area", "textMode": "auto"},
        {},
    ),
    "state-timeline": (
        {"mergeValues": True, "showValue": "auto", "alignValue": "left", "rowHeight": 0.9,
         "legend": _LEGEND, "tooltip": {"mode": "single", "sort": "none"}},
        # 0 is passing; any open finding or firing alert turns the row red.
        {"color": {"mode": "thresholds"}, "custom": {"fillOpacity": 70, "lineWidth": 0},
         "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                      {"color": "red", "value": 1}]}},
    ),
    "barchart": (
        {"orientation": "auto", "showValue": "auto", "stacking": "none", "legend": _LEGEND,
         "tooltip": {"mode": "multi", "sort": "desc"}},
        {},
    ),
}


def render(
    dashboard: Dashboard,
    *,
    datasource_uid: str = DATASOURCE_UID,
    database: str = "trainguard",
    link_titles: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return ``dashboard`` as Grafana dashboard JSON, ``{database}`` filled in.

    ``link_titles`` names the linked dashboards by uid (else a link shows the uid).
    """
    datasource = {"type": DATASOURCE_TYPE, "uid": datasource_uid}
    titles = link_titles or {}
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "id": None,
        "schemaVersion": SCHEMA_VERSION,
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: one instant across every panel
        "timezone": "utc",
        "time": {"from": dashboard.time_from, "to": "now"},
        "refresh": dashboard.refresh,
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": [_BUILTIN_ANNOTATIONS]},
        "links": [_link(uid, titles.get(uid, uid)) for uid in dashboard.links],
        "templating": {"list": [_variable(v, datasource, database) for v in dashboard.variables]},
        "panels": _panels(dashboard.panels, datasource, database),
    }


def dumps(doc: Mapping[str, Any]) -> str:
    """The JSON text written to disk: indented, keys sorted, newline-terminated."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(
    out_dir: Path,
    *,
    dashboards: Iterable[Dashboard] | None = None,
    datasource_uid: str = DATASOURCE_UID,
    database: str = "trainguard",
) -> list[Path]:
    """Write each dashboard (default: all four) to ``out_dir/<uid>.json``; return the paths."""
    if dashboards is None:
        from trainguard.grafana.dashboards import all_dashboards

        dashboards = all_dashboards()
    boards = list(dashboards)
    titles = {d.uid: d.title for d in boards}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for board in boards:
        doc = render(board, datasource_uid=datasource_uid, database=database,
                     link_titles=titles)
        path = out_dir / f"{board.uid}.json"
        path.write_text(dumps(doc), encoding="utf-8")
        paths.append(path)
    return paths


_BUILTIN_ANNOTATIONS = {
    "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
    "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
    "type": "dashboard",
}


def _link(uid: str, title: str) -> dict[str, Any]:
    # includeVars carries job/node/... across; keepTime keeps the incident's time range.
    return {"type": "link", "title": title, "url": f"/d/{uid}", "icon": "dashboard",
            "keepTime": True, "includeVars": True, "targetBlank": False, "asDropdown": False,
            "tags": [], "tooltip": ""}


def _variable(var: Variable, datasource: dict[str, str], database: str) -> dict[str, Any]:
    sql = var.sql.replace("{database}", database)
    return {
        "name": var.name, "label": var.label, "type": "query", "datasource": datasource,
        "definition": sql, "query": {"editorType": "sql", "rawSql": sql},
        # On time range change: a job or node appears in the picker once it reports.
        "refresh": 2, "multi": var.multi, "includeAll": var.include_all,
        "current": {}, "options": [], "hide": 0, "regex": "", "skipUrlSync": False,
        "sort": 0,  # the query's ORDER BY (ranks numerically)
    }


def _panels(
    panels: Iterable[Panel], datasource: dict[str, str], database: str
) -> list[dict[str, Any]]:
    out, x, y, row_height = [], 0, 0, 0
    for n, panel in enumerate(panels, 1):
        width = min(max(panel.width, 1), _GRID_WIDTH)
        if x + width > _GRID_WIDTH:  # wrap below the tallest panel of the row
            x, y, row_height = 0, y + row_height, 0
        out.append(_panel(n, panel, {"x": x, "y": y, "w": width, "h": panel.height},
                          datasource, database))
        x, row_height = x + width, max(row_height, panel.height)
    return out


def _panel(n: int, panel: Panel, grid: dict[str, int], datasource: dict[str, str],
           database: str) -> dict[str, Any]:
    options, defaults = _STYLE[panel.kind]
    fmt, query_type = _FORMATS[panel.format]
    if panel.kind == "heatmap":
        options = {**options, "cellValues": {"unit": panel.unit}}
    return {
        "id": n, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": datasource, "gridPos": grid,
        "fieldConfig": {"defaults": {**defaults, "unit": panel.unit}, "overrides": []},
        "options": options,
        "targets": [{
            "refId": "A", "datasource": datasource, "editorType": "sql", "format": fmt,
            "queryType": query_type, "rawSql": panel.sql.replace("{database}", database),
        }],
    }
