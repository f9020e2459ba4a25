"""Every query in the committed dashboards is valid against the ClickHouse plugin's model.

The model is written down here from the plugin's published types (grafana/clickhouse-datasource):

- ``src/types/sql.ts``: ``CHQueryBase extends DataQuery { pluginVersion: string;
  editorType: EditorType; rawSql: string; format?: number }``; ``CHSqlQuery`` adds
  ``editorType: EditorType.SQL; queryType?: QueryType; meta?: { timezone?: string;
  builderOptions?: QueryBuilderOptions }; expand?: boolean``; ``CHBuilderQuery`` has
  ``editorType: EditorType.Builder; builderOptions: QueryBuilderOptions;
  meta?: { timezone?: string }``. ``EditorType``: ``sql``, ``builder``.
- ``@grafana/schema`` ``DataQuery``: ``refId``, ``hide``, ``key``, ``queryType``, ``datasource``.
- ``src/types/queryBuilder.ts``: ``enum QueryType { Table = 'table', Logs = 'logs',
  TimeSeries = 'timeseries', Traces = 'traces' }``; ``QueryBuilderOptions`` has
  ``database``, ``table``, ``queryType`` (required) and ``mode``, ``columns``,
  ``aggregates``, ``filters``, ``groupBy``, ``orderBy``, ``limit``, ``meta``.
- ``src/data/utils.ts`` ``mapQueryTypeToGrafanaFormat``: table 1, logs 2, timeseries 0, traces 3.
- ``src/data/migration.ts`` ``isV3CHQuery``: a query without ``pluginVersion`` >= 4.0.0,
  or with ``queryType`` ``sql``/``builder``, is migrated as a v3 query.
- ``src/data/CHVariableSupport.tsx`` ``CHVariableQuery``: ``refId``, ``queryType``
  (``sql``, ``databases``, ``tables``, ``columns``, ``columnValues``), ``rawSql``,
  ``database``, ``table``, ``column``, ``mapKey``, ``columnIsMap``; older 4.x releases
  read a variable's query as a ``CHQuery`` (``editorType``, ``rawSql``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainguard.grafana.dashboards import UIDS, all_dashboards
from trainguard.grafana.plugin import DATASOURCE_TYPE, PLUGIN_VERSION

COMMITTED = Path(__file__).resolve().parents[3] / "infra" / "grafana" / "dashboards"

_DATA_QUERY = {"refId", "hide", "key", "queryType", "datasource"}
_BASE = _DATA_QUERY | {"pluginVersion", "editorType", "rawSql", "format"}
FIELDS = {"sql": _BASE | {"meta", "expand"}, "builder": _BASE | {"builderOptions", "meta"}}
META = {"sql": {"timezone", "builderOptions"}, "builder": {"timezone"}}
QUERY_TYPES = {"table": 1, "logs": 2, "timeseries": 0, "traces": 3}
BUILDER_REQUIRED = {"database", "table", "queryType"}
BUILDER_FIELDS = BUILDER_REQUIRED | {"mode", "columns", "aggregates", "filters", "groupBy",
                                     "orderBy", "limit", "meta"}
VARIABLE_FIELDS = {"refId", "queryType", "rawSql", "database", "table", "column", "mapKey",
                   "columnIsMap", "editorType"}
VARIABLE_QUERY_TYPES = {"sql", "databases", "tables", "columns", "columnValues"}


def problems(query: dict[str, Any]) -> list[str]:
    """What in ``query`` the plugin's model does not allow, or would migrate."""
    editor = query.get("editorType")
    if editor not in FIELDS:
        return [f"editorType {editor!r} not in {sorted(FIELDS)}"]
    out = [f"unknown field {k!r}" for k in sorted(set(query) - FIELDS[editor])]
    out += [f"missing {k!r}" for k in ("refId", "pluginVersion", "rawSql") if k not in query]
    version = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", str(query.get("pluginVersion", "")))
    if not version or int(version.group(1)) < 4:
        out.append(f"pluginVersion {query.get('pluginVersion')!r} is not a 4.x (v3 migration)")
    query_type = query.get("queryType")
    if query_type is not None and query_type not in QUERY_TYPES:
        out.append(f"queryType {query_type!r} not in {sorted(QUERY_TYPES)}")
    fmt = query.get("format")
    if fmt is not None and query_type in QUERY_TYPES and fmt != QUERY_TYPES[query_type]:
        out.append(f"format {fmt!r} != {QUERY_TYPES[query_type]} for queryType {query_type!r}")
    out += [f"unknown meta field {k!r}" for k in sorted(set(query.get("meta") or {}) -
                                                        META[editor])]
    if editor == "builder":
        options = query.get("builderOptions") or {}
        out += [f"builderOptions lacks {k!r}" for k in sorted(BUILDER_REQUIRED - set(options))]
        out += [f"unknown builderOptions field {k!r}"
                for k in sorted(set(options) - BUILDER_FIELDS)]
    if query.get("datasource", {}).get("type", DATASOURCE_TYPE) != DATASOURCE_TYPE:
        out.append(f"datasource {query['datasource']!r} is not the ClickHouse plugin")
    return out


def variable_problems(query: dict[str, Any]) -> list[str]:
    """What in a variable's ``query`` neither ``CHVariableQuery`` nor ``CHQuery`` reads."""
    out = [f"unknown field {k!r}" for k in sorted(set(query) - VARIABLE_FIELDS)]
    if query.get("queryType", "sql") not in VARIABLE_QUERY_TYPES:
        out.append(f"queryType {query['queryType']!r} not in {sorted(VARIABLE_QUERY_TYPES)}")
    if query.get("editorType", "sql") != "sql" or not query.get("rawSql"):
        out.append("not an SQL query with rawSql")
    return out


def _docs() -> dict[str, dict[str, Any]]:
    return {uid: json.loads((COMMITTED / f"{uid}.json").read_text(encoding="utf-8"))
            for uid in UIDS}


def _targets(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in doc["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target
    for ann in doc["annotations"]["list"]:
        if not ann.get("builtIn"):
            yield f"annotation {ann['name']}", ann["target"]


@pytest.mark.parametrize("uid", UIDS)
def test_every_target_of_every_committed_dashboard_fits_the_plugins_query_model(uid):
    found = {f"{name}: {p}" for name, t in _targets(_docs()[uid]) for p in problems(t)}
    assert found == set()


def test_the_dashboards_have_panel_and_annotation_targets_to_check():
    docs = _docs()
    expected = sum(len(d.panels) + len(d.annotations) for d in all_dashboards())
    assert sum(1 for doc in docs.values() for _ in _targets(doc)) == expected > 30
    annotations = [name for _, doc in docs.items() for name, _ in _targets(doc)
                   if name.startswith("annotation ")]
    assert annotations == ["annotation Alerts"]


@pytest.mark.parametrize("uid", UIDS)
def test_every_variable_query_fits_the_plugins_variable_model(uid):
    variables = [v for v in _docs()[uid]["templating"]["list"] if v["type"] == "query"]
    assert variables
    found = {f"${v['name']}: {p}" for v in variables for p in variable_problems(v["query"])}
    assert found == set()


def test_the_targets_are_written_for_a_4x_plugin_release():
    assert re.fullmatch(r"4\.\d+\.\d+", PLUGIN_VERSION)


@pytest.mark.parametrize(("change", "expected"), [
    ({"queryType": "timeSeries"}, "queryType 'timeSeries' not in"),
    ({"queryType": "sql"}, "queryType 'sql' not in"),
    ({"pluginVersion": "3.3.0"}, "pluginVersion '3.3.0' is not a 4.x"),
    ({"format": 1}, "format 1 != 0 for queryType 'timeseries'"),
    ({"editorType": "raw"}, "editorType 'raw' not in"),
    ({"builderOptions": {}}, "unknown field 'builderOptions'"),
    ({"meta": {"liveView": True}}, "unknown meta field 'liveView'"),
    ({"datasource": {"type": "clickhouse", "uid": "x"}}, "is not the ClickHouse plugin"),
])
def test_the_check_names_what_the_plugin_would_reject_or_migrate(change, expected):
    good = {"refId": "A", "editorType": "sql", "rawSql": "SELECT 1", "format": 0,
            "queryType": "timeseries", "pluginVersion": "4.11.2",
            "datasource": {"type": DATASOURCE_TYPE, "uid": "${datasource}"}}
    assert problems(good) == []
    assert any(expected in p for p in problems({**good, **change})), problems({**good, **change})


def test_a_query_without_plugin_version_is_one_the_plugin_migrates():
    v3 = {"refId": "A", "editorType": "sql", "rawSql": "SELECT 1"}
    assert problems(v3) == ["missing 'pluginVersion'",
                            "pluginVersion None is not a 4.x (v3 migration)"]


def test_a_builder_query_needs_its_options():
    query = {"refId": "A", "editorType": "builder", "rawSql": "", "pluginVersion": "4.0.0",
             "builderOptions": {"database": "d", "table": "t", "limit": 5, "fields": []}}
    assert problems(query) == ["builderOptions lacks 'queryType'",
                               "unknown builderOptions field 'fields'"]


def test_a_variable_query_in_the_panel_shape_is_flagged():
    assert variable_problems({"editorType": "sql", "rawSql": "SELECT 1"}) == []
    assert variable_problems({"rawSql": "SELECT 1", "format": 1, "queryType": "table"}) == [
        "unknown field 'format'", "queryType 'table' not in "
        "['columnValues', 'columns', 'databases', 'sql', 'tables']"]
