"""The ClickHouse data source plugin's query model, as the rendered dashboards write it.

Targets are written in the shape ``grafana-clickhouse-datasource`` 4.x saves from its SQL
editor (``src/types/sql.ts``, ``CHSqlQuery``): ``editorType: "sql"``, ``rawSql``,
``pluginVersion`` and ``format`` with its ``queryType``. Without a ``pluginVersion`` of
4.0.0 or later the plugin takes a saved query for a 3.x one and migrates it when the
editor opens (``src/data/migration.ts``, ``isV3CHQuery``). ``queryType`` is the plugin's
``QueryType`` enum (``src/types/queryBuilder.ts``: ``table``, ``logs``, ``timeseries``,
``traces``), and ``format`` the number ``mapQueryTypeToGrafanaFormat`` gives it
(``src/data/utils.ts``, the ``sqlds`` format: 0 time series, 1 table, 2 logs, 3 traces).

Every panel, target, variable and annotation names the data source through the
dashboard's ``datasource`` variable (:func:`datasource_variable`), so a dashboard imported
through the UI picks any ClickHouse data source, and a provisioned one selects
``trainguard-clickhouse`` by default.
"""

from __future__ import annotations

from typing import Any

from trainguard.grafana.model import QueryFormat

__all__ = [
    "DATASOURCE_NAME", "DATASOURCE_REF", "DATASOURCE_TYPE", "DATASOURCE_UID",
    "DATASOURCE_VARIABLE", "PLUGIN_VERSION", "QUERY_TYPES", "datasource_variable", "target",
]

DATASOURCE_TYPE = "grafana-clickhouse-datasource"
#: The provisioned data source (``infra/grafana/provisioning/datasources/trainguard.yaml``).
DATASOURCE_UID = "trainguard-clickhouse"
#: Its display name, as provisioning and ``trainguard grafana push`` create it.
DATASOURCE_NAME = "trainguard ClickHouse"
#: The dashboard variable (type ``datasource``) every query names its data source by.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE_REF = {"type": DATASOURCE_TYPE, "uid": f"${{{DATASOURCE_VARIABLE}}}"}
#: The plugin release the targets are written for (a 4.x: no migration on load).
PLUGIN_VERSION = "4.11.2"
#: Per model format: the plugin's ``QueryType`` and its ``format`` number.
QUERY_TYPES: dict[QueryFormat, tuple[str, int]] = {
    "time_series": ("timeseries", 0), "table": ("table", 1), "logs": ("logs", 2),
}


def target(ref_id: str, sql: str, fmt: QueryFormat) -> dict[str, Any]:
    """One SQL-editor query of the plugin: ``sql`` shaped as ``fmt``."""
    query_type, number = QUERY_TYPES[fmt]
    return {
        "refId": ref_id, "datasource": dict(DATASOURCE_REF), "editorType": "sql",
        "rawSql": sql, "format": number, "queryType": query_type, "pluginVersion": PLUGIN_VERSION,
    }


def datasource_variable(default_uid: str = DATASOURCE_UID) -> dict[str, Any]:
    """The ``datasource`` variable: any ClickHouse data source, ``default_uid`` first."""
    return {
        "name": DATASOURCE_VARIABLE, "label": "Data source", "type": "datasource",
        "query": DATASOURCE_TYPE, "regex": "", "refresh": 1, "hide": 0,
        "multi": False, "includeAll": False, "options": [], "skipUrlSync": False,
        # Grafana keeps the uid as the value; a Grafana without it falls back to the
        # first ClickHouse data source.
        "current": {"selected": False, "value": default_uid,
                    "text": DATASOURCE_NAME if default_uid == DATASOURCE_UID else default_uid},
    }
