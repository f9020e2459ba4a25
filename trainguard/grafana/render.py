"""Grafana dashboard JSON from the model: the files under ``infra/grafana/dashboards/``.

The JSON is Grafana's dashboard model at ``schemaVersion`` 42, the last version of the v1
dashboard API (``DASHBOARD_SCHEMA_VERSION`` in grafana/grafana's
``public/app/features/dashboard/state/DashboardMigrator.ts``; Grafana 12 writes it, and
no Grafana migrates a dashboard at or above its own version), with panels laid out left
to right on the 24-column grid. Targets, variables and annotations are the ClickHouse
plugin's queries (:mod:`trainguard.grafana.plugin`) and name the data source through the
``datasource`` variable, so the same files work provisioned or imported in any Grafana.
Output is deterministic: the same model renders the same bytes (keys sorted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainguard.grafana.model import Annotation, ColumnLink, Dashboard, Panel, PanelKind, Variable
from trainguard.grafana.plugin import (
    DATASOURCE_REF,
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    datasource_variable,
    target,
)

__all__ = [
    "DATASOURCE_TYPE", "DATASOURCE_UID", "SCHEMA_VERSION", "dumps", "render", "write_all",
]

#: grafana/grafana ``DashboardMigrator.ts``: ``DASHBOARD_SCHEMA_VERSION = 42``, final for
#: the v1 API. The migrations 40 (string ``refresh``), 41 (no ``timepicker.time_options``)
#: and 42 (``hideFrom`` overrides) change nothing these dashboards hold.
SCHEMA_VERSION = 42
_GRID_WIDTH = 24
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

    ``datasource_uid`` is the ``datasource`` variable's default selection.
    ``link_titles`` names the linked dashboards by uid (else a link shows the uid).
    """
    titles = link_titles or {}
    panels = _panels(dashboard.panels, database)
    variables = [_variable(v, database) for v in dashboard.variables]
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
        "annotations": {"list": [_BUILTIN_ANNOTATIONS, *(
            _annotation(a, panels, database) for a in dashboard.annotations)]},
        "links": [_link(uid, titles.get(uid, uid)) for uid in dashboard.links],
        "templating": {"list": [datasource_variable(datasource_uid), *variables]},
        "panels": panels,
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


def _annotation(ann: Annotation, panels: list[dict[str, Any]], database: str) -> dict[str, Any]:
    ids = [p["id"] for p in panels if p["type"] in ann.panel_kinds]
    return {
        "name": ann.name, "datasource": dict(DATASOURCE_REF), "enable": True, "hide": False,
        "iconColor": ann.color, "filter": {"exclude": False, "ids": ids},
        # The plugin's annotation editor keeps its SQL under target (refId "annotation").
        "target": target("annotation", ann.sql.replace("{database}", database), "table"),
    }


def _variable(var: Variable, database: str) -> dict[str, Any]:
    sql = var.sql.replace("{database}", database)
    return {
        "name": var.name, "label": var.label, "type": "query",
        "datasource": dict(DATASOURCE_REF),
        "definition": sql, "query": {"editorType": "sql", "rawSql": sql},
        # On time range change: a job or node appears in the picker once it reports.
        "refresh": 2, "multi": var.multi, "includeAll": var.include_all,
        "current": {}, "options": [], "hide": 0, "regex": "", "skipUrlSync": False,
        "sort": 0,  # the query's ORDER BY (ranks numerically)
    }


def _panels(panels: Iterable[Panel], database: str) -> list[dict[str, Any]]:
    out, x, y, row_height = [], 0, 0, 0
    for n, panel in enumerate(panels, 1):
        width = min(max(panel.width, 1), _GRID_WIDTH)
        if x + width > _GRID_WIDTH:  # wrap below the tallest panel of the row
            x, y, row_height = 0, y + row_height, 0
        out.append(_panel(n, panel, {"x": x, "y": y, "w": width, "h": panel.height},
                          database))
        x, row_height = x + width, max(row_height, panel.height)
    return out


def _panel(n: int, panel: Panel, grid: dict[str, int], database: str) -> dict[str, Any]:
    options, defaults = _STYLE[panel.kind]
    if panel.kind == "heatmap":
        options = {**options, "cellValues": {"unit": panel.unit}}
    return {
        "id": n, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": dict(DATASOURCE_REF), "gridPos": grid,
        "fieldConfig": {"defaults": {**defaults, "unit": panel.unit},
                        "overrides": [_link_override(link) for link in panel.links]},
        "options": options,
        "targets": [target("A", panel.sql.replace("{database}", database), panel.format)],
    }


def _link_override(link: ColumnLink) -> dict[str, Any]:
    # A data link on the column: each cell's own value is the URL it opens.
    return {"matcher": {"id": "byName", "options": link.column}, "properties": [
        {"id": "links", "value": [{"title": link.title, "url": "${__value.raw}",
                                   "targetBlank": link.new_tab}]}]}
