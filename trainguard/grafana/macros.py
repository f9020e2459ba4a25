"""Turn a panel's SQL into the plain ClickHouse SQL Grafana would send, macros expanded.

Grafana and the ClickHouse data source plugin (``grafana-clickhouse-datasource``) rewrite a
panel's SQL in three passes, and :func:`expand` runs the same three, in the same order:

1. the plugin's front end replaces ``$__conditionalAll(condition, $var)`` by ``1=1`` when
   ``$var`` is "All" (or nothing is selected), else by ``condition``;
2. Grafana interpolates variables: ``$var``, ``${var}``, ``${var:format}``, ``[[var]]``
   and the globals ``$__from``, ``$__to`` (epoch ms), ``$__interval``,
   ``$__interval_ms``, ``$__range_s``, ``$__range_ms``; with no format, the plugin
   quotes a multi-value selection as ``'a','b'`` and leaves a single value bare;
3. the plugin's back end expands its macros (``$__timeFilter(col)``, ``$__fromTime``,
   ``$__timeInterval(col)``, ... see ``_MACROS``), splitting arguments at every comma.

An unknown variable or macro is a :class:`MacroError`, not SQL that fails later. Known
difference: some plugin versions let a macro without arguments (``$__fromTime``) swallow
the next parenthesised text when a ``(`` follows it before any ``)``; here a macro takes
arguments only from a ``(`` right after its name. Panels write such macros as
``($__fromTime)``, which every version reads alike.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from trainguard.errors import ConfigError

__all__ = ["ALL", "MACROS", "MacroError", "Value", "expand", "is_all"]

#: Grafana's value for the "All" option of a variable (its text is "All").
ALL = "$__all"

_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)
_MACRO = re.compile(r"\$__(\w+)")
_CONDITIONAL_ALL = "$__conditionalAll("
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Value = str | Sequence[str]


class MacroError(ConfigError):
    """Panel SQL names an unknown macro or variable, or calls a macro wrongly."""


def is_all(value: Value) -> bool:
    """Tell whether a variable's value is Grafana's "All" (``$__all``, or its text ``All``)."""
    values = [value] if isinstance(value, str) else list(value)
    return any(v in (ALL, "All") for v in values)


def expand(
    sql: str,
    *,
    start: float,
    end: float,
    variables: Mapping[str, Value],
    database: str,
    interval_s: float,
    options: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Return ``sql`` as the plugin would send it for the range ``start``..``end``.

    ``start``/``end`` are Unix epoch seconds; ``variables`` maps each dashboard variable
    to its selection (a list for a multi-value one; ``$__all`` for "All");
    ``options`` lists a variable's values, which stand in for "All" outside
    ``$__conditionalAll`` as Grafana does; ``{database}`` becomes ``database``.
    """
    if not (math.isfinite(start) and math.isfinite(end) and start <= end):
        raise MacroError(f"time range {start!r}..{end!r}; expected start <= end")
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise MacroError(f"interval_s={interval_s!r}; expected a number > 0")
    ctx = _Context(start, end, interval_s, variables, options or {})
    sql = sql.replace("{database}", database)
    sql = _conditional_all(sql, variables)
    sql = _VARIABLE.sub(ctx.variable, sql)
    return ctx.macros(sql)


# -- pass 1: $__conditionalAll (the plugin's front end) ---------------------------------


def _conditional_all(sql: str, variables: Mapping[str, Value]) -> str:
    # Last occurrence first, as the plugin does, so a nested call sees expanded text.
    at = sql.rfind(_CONDITIONAL_ALL)
    while at != -1:
        close = _closing_paren(sql, at + len(_CONDITIONAL_ALL) - 1)
        args = _split_top_level(sql[at + len(_CONDITIONAL_ALL) : close])
        if len(args) != 2:
            raise MacroError(f"$__conditionalAll takes (condition, $variable), got {len(args)} "
                             f"argument(s): {sql[at:close + 1]!r}")
        ref = re.fullmatch(r"\$(\w+)|\$\{(\w+)\}", args[1].strip())
        if ref is None:
            raise MacroError(f"$__conditionalAll's second argument must be $name or ${{name}}, "
                             f"got {args[1].strip()!r}")
        name = ref.group(1) or ref.group(2)
        if name not in variables:
            raise MacroError(f"$__conditionalAll names unknown variable {name!r}; "
                             f"known: {', '.join(sorted(variables)) or 'none'}")
        value = variables[name]
        empty = value == "" or (not isinstance(value, str) and len(value) == 0)
        phrase = "1=1" if empty or is_all(value) else args[0]
        sql = sql[:at] + phrase + sql[close + 1 :]
        at = sql.rfind(_CONDITIONAL_ALL)
    return sql


def _closing_paren(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise MacroError(f"unbalanced parentheses after {text[max(0, open_at - 20):open_at + 40]!r}")


def _split_top_level(text: str) -> list[str]:
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    return [*parts, text[last:]]


# -- passes 2 and 3: variables (Grafana) and macros (the plugin's back end) --------------


class _Context:
    def __init__(self, start: float, end: float, interval_s: float,
                 variables: Mapping[str, Value], options: Mapping[str, Sequence[str]]) -> None:
        self.start, self.end, self.interval_s = start, end, interval_s
        self.variables, self.options = variables, options
        ms = max(int(interval_s * 1000), 1)
        self.globals: dict[str, str] = {
            "__from": str(int(start * 1000)), "__to": str(int(end * 1000)),
            "__interval": _hms(ms / 1000), "__interval_ms": str(ms),
            "__range_s": str(int(end - start)), "__range_ms": str(int((end - start) * 1000)),
        }

    def variable(self, m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if m.group(5):
            raise MacroError(f"variable field access {m.group(0)!r} is not supported")
        if name in self.variables:
            return _format(name, self._value(name), fmt)
        if name in self.globals:
            if fmt is not None:
                raise MacroError(f"format {fmt!r} on {m.group(0)!r} is not supported")
            return self.globals[name]
        if name.startswith("__"):
            return m.group(0)  # a plugin macro: the next pass
        raise MacroError(f"unknown variable {name!r} in {m.group(0)!r}; "
                         f"known: {', '.join(sorted(self.variables)) or 'none'}")

    def _value(self, name: str) -> Value:
        value = self.variables[name]
        if not is_all(value):
            return value
        if name not in self.options:
            raise MacroError(f"variable {name!r} is All outside $__conditionalAll, and its "
                             "options are unknown; wrap its use in $__conditionalAll(..., "
                             f"${name}) or pass its options")
        return list(self.options[name])

    def macros(self, sql: str) -> str:
        out, i = [], 0
        while (m := _MACRO.search(sql, i)) is not None:
            out.append(sql[i : m.start()])
            name, i = m.group(1), m.end()
            args: list[str] | None = None
            if i < len(sql) and sql[i] == "(":
                close = _closing_paren(sql, i)
                # Inner macros first; then every comma splits, as the plugin's parser does.
                args = [a.strip() for a in self.macros(sql[i + 1 : close]).split(",")]
                i = close + 1
            macro = _MACROS.get(name)
            if macro is None:
                raise MacroError(f"unknown macro $__{name}; known: "
                                 + ", ".join(f"$__{k}" for k in sorted(MACROS)))
            out.append(macro(self, name, args))
        return "".join(out) + sql[i:]

    def seconds(self) -> int:
        return int(max(self.interval_s, 1))


def _format(name: str, value: Value, fmt: str | None) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if fmt is None:  # the plugin's own: a list is quoted, a single value is left bare
        return value if isinstance(value, str) else "'" + "','".join(values) + "'"
    formats: dict[str, Callable[[list[str]], str]] = {
        "singlequote": lambda vs: ",".join("'" + v.replace("'", "\\'") + "'" for v in vs),
        "doublequote": lambda vs: ",".join('"' + v.replace('"', '\\"') + '"' for v in vs),
        "sqlstring": lambda vs: ",".join("'" + v.replace("'", "''") + "'" for v in vs),
        "csv": ",".join, "raw": ",".join, "pipe": "|".join,
        "json": lambda vs: json.dumps(vs[0] if isinstance(value, str) else vs),
    }
    if fmt not in formats:
        raise MacroError(f"unknown format {fmt!r} for variable {name!r}; "
                         f"expected one of: {', '.join(sorted(formats))}")
    return formats[fmt](values)


def _hms(seconds: float) -> str:
    """Grafana's short duration: the largest whole unit (90 s -> ``1m``)."""
    for unit, size in (("y", 31536000), ("w", 604800), ("d", 86400), ("h", 3600), ("m", 60),
                       ("s", 1)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


# -- the plugin's macros -----------------------------------------------------------------

Macro = Callable[[_Context, str, "list[str] | None"], str]


def _args(name: str, args: list[str] | None, count: int) -> list[str]:
    if args is None or len(args) != count or any(not a for a in args):
        got = "none" if args is None else str(len(args))
        raise MacroError(f"$__{name} expects {count} argument(s), received {got}")
    return args


def _no_args(name: str, args: list[str] | None) -> None:
    if args not in (None, [""]):
        raise MacroError(f"$__{name} takes no arguments, received {len(args or [])}")


def _dt(t: float) -> str:
    return f"toDateTime({math.floor(t)})"


def _dt64(t: float) -> str:
    return f"fromUnixTimestamp64Milli({math.floor(t * 1000)})"


def _date(t: float) -> str:
    return f"toDate('{datetime.fromtimestamp(t, UTC):%Y-%m-%d}')"


def _range(conv: Callable[[float], str]) -> Macro:
    def macro(c: _Context, name: str, args: list[str] | None) -> str:
        (col,) = _args(name, args, 1)
        return f"{col} >= {conv(c.start)} AND {col} <= {conv(c.end)}"
    return macro


def _instant(at_end: bool, conv: Callable[[float], str]) -> Macro:
    def macro(c: _Context, name: str, args: list[str] | None) -> str:
        _no_args(name, args)
        return conv(c.end if at_end else c.start)
    return macro


def _date_time_filter(c: _Context, name: str, args: list[str] | None) -> str:
    date_col, time_col = _args(name, args, 2)
    return (f"({date_col} >= {_date(c.start)} AND {date_col} <= {_date(c.end)}) AND "
            f"({time_col} >= {_dt(c.start)} AND {time_col} <= {_dt(c.end)})")


def _time_interval(c: _Context, name: str, args: list[str] | None) -> str:
    (col,) = _args(name, args, 1)
    return f"toStartOfInterval(toDateTime({col}), INTERVAL {c.seconds()} second)"


def _time_interval_ms(c: _Context, name: str, args: list[str] | None) -> str:
    (col,) = _args(name, args, 1)
    ms = max(int(c.interval_s * 1000), 1)
    return f"toStartOfInterval(toDateTime64({col}, 3), INTERVAL {ms} millisecond)"


def _interval_s(c: _Context, name: str, args: list[str] | None) -> str:
    _no_args(name, args)
    return str(c.seconds())


def _bound(op: str, at_end: bool) -> Macro:
    def macro(c: _Context, name: str, args: list[str] | None) -> str:
        (col,) = _args(name, args, 1)
        return f"{col} {op} {_dt(c.end if at_end else c.start)}"
    return macro


def _time_group(c: _Context, name: str, args: list[str] | None) -> str:
    col, period = _args(name, args, 2)
    m = _DURATION.fullmatch(period.strip("'\""))
    if m is None:
        raise MacroError(f"$__timeGroup period {period!r}; expected a duration such as 5m")
    seconds = max(int(float(m.group(1)) * _UNIT_S[m.group(2)]), 1)
    return f"toStartOfInterval(toDateTime({col}), INTERVAL {seconds} second)"


_MACROS: dict[str, Macro] = {
    "fromTime": _instant(False, _dt), "toTime": _instant(True, _dt),
    "fromTime_ms": _instant(False, _dt64), "toTime_ms": _instant(True, _dt64),
    "timeFilter": _range(_dt), "timeFilter_ms": _range(_dt64), "dateFilter": _range(_date),
    "dateTimeFilter": _date_time_filter, "dt": _date_time_filter,
    "timeFrom": _bound(">=", False), "timeTo": _bound("<=", True),
    "timeInterval": _time_interval, "timeInterval_ms": _time_interval_ms,
    "interval_s": _interval_s, "timeGroup": _time_group,
}
#: Names of the plugin macros :func:`expand` knows (without the ``$__`` prefix).
MACROS = frozenset(_MACROS) | {"conditionalAll"}
