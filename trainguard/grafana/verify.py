"""Run every dashboard query against a store, as Grafana would, and say which ones fail.

A dashboard that renders is not one that works: a renamed column, a macro the plugin
expands differently or a table that stayed empty only shows in Grafana as "No data".
:func:`verify` expands each variable's and each panel's SQL with
:func:`~trainguard.grafana.macros.expand` (variables first, in order, so a panel sees
their values), runs it, and reports per query: ok, or the error, the row count, and the
columns against the panel's declared ``columns``. A query that errors, returns no rows
(unless its panel ``allow_empty``), returns other columns, or (time series) returns no
``time`` column first, fails. Annotation queries run the same way; they may return no
rows (a range without alerts), never other columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trainguard.errors import ConfigError, TrainguardError
from trainguard.grafana.macros import ALL, Value, expand, is_all
from trainguard.grafana.model import Annotation, Dashboard, Panel, Variable

if TYPE_CHECKING:
    from trainguard.pipeline.store.base import Store

__all__ = ["PanelCheck", "default_interval", "failures", "verify"]

#: Grafana draws about one point per pixel of a panel; 1000 is a wide panel's width.
_MAX_POINTS = 1000


@dataclass(frozen=True)
class PanelCheck:
    """The outcome of one panel's (or variable's) query."""

    dashboard: str
    #: The panel title, ``$name`` for a variable's query, ``@name`` for an annotation's.
    panel: str
    kind: Literal["panel", "variable", "annotation"]
    ok: bool
    rows: int
    columns: tuple[str, ...]
    expected: tuple[str, ...]
    #: Why it failed (or ``""``); the expanded SQL is in ``sql``.
    error: str
    sql: str

    @property
    def status(self) -> str:
        """``ok``, ``empty`` (allowed), or ``FAIL``."""
        if not self.ok:
            return "FAIL"
        return "ok" if self.rows else "empty"


def default_interval(start: float, end: float) -> float:
    """The bucket Grafana would pick for ``start``..``end`` on a wide panel (>= 1 s)."""
    return float(max(1, math.ceil((end - start) / _MAX_POINTS)))


def verify(
    store: Store,
    dashboards: Iterable[Dashboard],
    *,
    start: float,
    end: float,
    variables: Mapping[str, Value],
    interval_s: float | None = None,
) -> list[PanelCheck]:
    """Run every variable, panel and annotation query of ``dashboards``; one check each.

    ``variables`` pins selections by name (``$__all`` for All); a variable not named is
    All when it offers All, else its first value, as a freshly opened dashboard. Naming
    a variable no dashboard has is a :class:`ConfigError` (a typo would pass unnoticed).
    """
    boards = list(dashboards)
    known = {v.name for board in boards for v in board.variables}
    unknown = sorted(set(variables) - known)
    if unknown:
        raise ConfigError(f"no dashboard has a variable {', '.join(map(repr, unknown))}; "
                          f"they have: {', '.join(sorted(known)) or 'none'}")
    step = interval_s if interval_s is not None else default_interval(start, end)
    checks: list[PanelCheck] = []
    for board in boards:
        values: dict[str, Value] = {}
        options: dict[str, list[str]] = {}
        for var in board.variables:
            check, found = _run_variable(store, board, var, start, end, step, values, options)
            checks.append(check)
            options[var.name] = found
            values[var.name] = _selection(var, variables, found)
        for panel in board.panels:
            checks.append(_run_panel(store, board, panel, start, end, step, values, options))
        for ann in board.annotations:
            checks.append(_run_annotation(store, board, ann, start, end, step, values, options))
    return checks


def failures(checks: Sequence[PanelCheck]) -> list[PanelCheck]:
    """The checks that failed."""
    return [c for c in checks if not c.ok]


def _selection(var: Variable, given: Mapping[str, Value], found: list[str]) -> Value:
    if var.name in given:
        value = given[var.name]
        if var.multi and isinstance(value, str) and not is_all(value):
            return [value]  # a multi-value variable holds a list even for one choice
        return value
    if var.include_all or not found:
        return ALL
    return [found[0]] if var.multi else found[0]


def _run_variable(
    store: Store, board: Dashboard, var: Variable, start: float, end: float, step: float,
    values: Mapping[str, Value], options: Mapping[str, Sequence[str]],
) -> tuple[PanelCheck, list[str]]:
    sql, columns, rows, error = _run(store, var.sql, start, end, step, values, options,
                                     store.database)
    found = [str(row[0]) for row in rows if row and row[0] is not None]
    if not error and not rows:
        error = "no rows: the variable offers no values"
    check = PanelCheck(board.uid, f"${var.name}", "variable", not error, len(rows), columns,
                       (), error, sql)
    return check, found


def _run_panel(
    store: Store, board: Dashboard, panel: Panel, start: float, end: float, step: float,
    values: Mapping[str, Value], options: Mapping[str, Sequence[str]],
) -> PanelCheck:
    sql, columns, rows, error = _run(store, panel.sql, start, end, step, values, options,
                                     store.database)
    if not error:
        error = _judge(panel, columns, len(rows))
    return PanelCheck(board.uid, panel.title, "panel", not error, len(rows), columns,
                      panel.columns, error, sql)


def _run_annotation(
    store: Store, board: Dashboard, ann: Annotation, start: float, end: float, step: float,
    values: Mapping[str, Value], options: Mapping[str, Sequence[str]],
) -> PanelCheck:
    sql, columns, rows, error = _run(store, ann.sql, start, end, step, values, options,
                                     store.database)
    if not error and columns != ann.columns:
        error = f"columns {list(columns)} != expected {list(ann.columns)}"
    return PanelCheck(board.uid, f"@{ann.name}", "annotation", not error, len(rows), columns,
                      ann.columns, error, sql)


def _run(
    store: Store, raw: str, start: float, end: float, step: float,
    values: Mapping[str, Value], options: Mapping[str, Sequence[str]], database: str,
) -> tuple[str, tuple[str, ...], list[tuple[object, ...]], str]:
    """Expand and run ``raw``: (sql, columns, rows, error text or "")."""
    try:
        sql = expand(raw, start=start, end=end, variables=values, database=database,
                     interval_s=step, options=options)
    except TrainguardError as exc:
        return raw, (), [], f"expand: {exc}"
    try:
        result = store.query(sql)
    except TrainguardError as exc:
        return sql, (), [], f"query: {exc}"
    return sql, tuple(result.columns), list(result.rows), ""


def _judge(panel: Panel, columns: tuple[str, ...], rows: int) -> str:
    if panel.columns and columns != panel.columns:
        return f"columns {list(columns)} != expected {list(panel.columns)}"
    if panel.format == "time_series" and (not columns or columns[0] != "time"):
        return f"time series without a first column named 'time': {list(columns)}"
    if rows == 0 and not panel.allow_empty:
        return "no rows"
    return ""
