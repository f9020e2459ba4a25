"""Dashboards as plain data: what a panel shows and the ClickHouse SQL behind it.

One model serves three consumers: the Grafana JSON renderer (``infra/grafana/``), the
verification that runs every panel's SQL against the store, and ``trainguard report``,
which draws the same panels for an incident. Panel SQL is written for the official
ClickHouse data source plugin (``grafana-clickhouse-datasource``): its macros
(``$__timeFilter(col)``, ``$__timeInterval(col)``, ``$__fromTime``, ``$__toTime``,
``$__interval_s``, ``$__conditionalAll(cond, $var)``) and dashboard variables
(``${job}``, ``${node:singlequote}``, ...), with ``{database}`` for the store's database
(filled in when the JSON is rendered or the SQL verified).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Annotation", "ColumnLink", "Dashboard", "Panel", "PanelKind", "QueryFormat",
           "Variable"]

PanelKind = Literal["timeseries", "heatmap", "table", "stat", "state-timeline", "barchart"]
#: How the plugin shapes the result: ``time_series`` wants a time column first.
QueryFormat = Literal["time_series", "table", "logs"]


@dataclass(frozen=True)
class ColumnLink:
    """A table column whose values are URLs: each cell links to its own value."""

    column: str
    title: str
    #: Open in a new tab (a runbook); a Grafana dashboard opens in place.
    new_tab: bool = True


@dataclass(frozen=True)
class Panel:
    """One panel: a title, a visualization and one SQL query."""

    title: str
    kind: PanelKind
    sql: str
    #: Grafana unit id (``percent``, ``watt``, ``celsius``, ``s``, ``ms``, ``short``, ...).
    unit: str = "short"
    description: str = ""
    format: QueryFormat = "time_series"
    #: The columns the query returns, in order; verification checks the result's names.
    columns: tuple[str, ...] = ()
    #: Grid size (24 columns wide); the renderer lays panels out left to right.
    width: int = 12
    height: int = 8
    #: For ``trainguard report``: the column that names a series (e.g. ``rank``), so the
    #: blamed rank or node can be drawn highlighted among its peers.
    series: str | None = None
    #: A table of events (open alerts, silences) may rightly be empty; verification
    #: then passes it on zero rows. Time series never are: they bucket onto every interval.
    allow_empty: bool = False
    #: Columns drawn as links (tables): each must be one of ``columns``.
    links: tuple[ColumnLink, ...] = ()


@dataclass(frozen=True)
class Annotation:
    """Events drawn over a dashboard's panels: one SQL query returning ``columns``.

    Grafana reads ``time`` (and ``timeEnd``, which makes a region), ``title``, ``text``
    and ``tags`` (comma-separated) by name.
    """

    name: str
    sql: str
    columns: tuple[str, ...] = ("time", "timeEnd", "title", "text", "tags")
    #: Grafana colour name or CSS colour of the marks.
    color: str = "red"
    #: Drawn on the panels of these kinds only (the charts with a time axis).
    panel_kinds: tuple[PanelKind, ...] = ("timeseries",)


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable filled by a query (``SELECT DISTINCT ...``)."""

    name: str
    label: str
    sql: str
    multi: bool = False
    include_all: bool = True


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: stable ``uid`` (links point at it), variables, panels in order."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = ("trainguard",)
    #: Default time range, Grafana syntax (``now-1h``).
    time_from: str = "now-1h"
    refresh: str = "10s"
    #: Links to other dashboards (by uid), carrying the variables and time range.
    links: tuple[str, ...] = field(default=())
    #: Drawn over the panels (alerts on the job charts); their SQL is verified too.
    annotations: tuple[Annotation, ...] = ()
