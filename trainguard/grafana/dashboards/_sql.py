"""What the dashboards' queries share: the SQL snippets, the ``@`` tokens and their filler.

Queries are written as plain text with ``@name`` tokens (``@cluster``, ``@grid``, ...) so
that ClickHouse's and Grafana's braces need no escaping; :func:`sql` fills them in.
"""

from __future__ import annotations

import textwrap

__all__ = ["FAR_FUTURE", "HB_WHERE", "LATEST_FIRST", "increase", "open_counts", "sql", "window"]

#: Stands in for "not cleared / not resolved yet" in interval overlaps.
FAR_FUTURE = "toDateTime64('2100-01-01 00:00:00', 3, 'UTC')"
#: Alert rows, the latest state change of each alert first, as
#: trainguard.pipeline.alerts.history orders them (``LIMIT 1 BY`` keeps that one).
LATEST_FIRST = "ts DESC, starts_at DESC, status = 'resolved' DESC"


def _in(column: str, var: str) -> str:
    return f"$__conditionalAll({column} IN (${{{var}:singlequote}}), ${var})"


def _grid(step: str) -> str:
    """Every bucket start of the range, as ``$__timeInterval`` would label it."""
    return (
        f"SELECT toDateTime(t0 + i * step, 'UTC') AS time FROM (SELECT {step} AS step, "
        "intDiv(toUInt32($__fromTime), step) * step AS t0) "
        "ARRAY JOIN range(toUInt32(intDiv(toUInt32($__toTime) - t0, step) + 1)) AS i"
    )


def increase(column: str) -> str:
    """Rise of a cumulative counter since the row before (window ``w``); resets count 0."""
    value = f"toInt64(ifNull({column}, 0))"
    return f"greatest({value} - lagInFrame({value}, 1, {value}) OVER w, 0)"


def window(*keys: str) -> str:
    """The window ``w`` that :func:`increase` reads: each counter's rows in time order."""
    return (f"WINDOW w AS (PARTITION BY {', '.join(keys)} ORDER BY ts "
            "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)")


_TOKENS = {
    "@grid30": _grid("greatest(($__interval_s), 30)"),
    "@grid": _grid("($__interval_s)"),
    # Buckets of at least 30 s, where the newest heartbeat matters, not every one.
    "@bucket30": "toStartOfInterval(toDateTime(ts), INTERVAL greatest(($__interval_s), 30) second)",
    "@cluster": _in("cluster", "cluster"),
    "@job": _in("job_id", "job"),
    "@node": _in("node", "node"),
    "@rank": _in("rank", "rank"),
    "@worker": _in("worker", "worker"),
    "@any_node": "$__conditionalAll(hasAny(nodes, [${node:singlequote}]), $node)",
    "@any_rank": "$__conditionalAll(hasAny(arrayMap(r -> toString(r), ranks), "
                 "[${rank:singlequote}]), $rank)",
}


def sql(text: str, **parts: str) -> str:
    """Dedent ``text``, then fill in ``@name`` from ``parts`` and the shared tokens.

    Longest token first, so ``@grid`` does not eat the start of ``@grid30``.
    """
    tokens = {**_TOKENS, **{f"@{k}": v for k, v in parts.items()}}
    text = textwrap.dedent(text).strip()
    for token in sorted(tokens, key=len, reverse=True):
        text = text.replace(token, tokens[token])
    return text


def open_counts(array: str, keys: tuple[str, ...]) -> str:
    """Per grid bucket, how many (key, start, end) items of ``array`` overlap it, per key."""
    return ",\n    ".join(
        f"arrayCount(f -> f.1 = '{k}' AND f.2 < toUInt32(time) + ($__interval_s) "
        f"AND f.3 > toUInt32(time), {array}) AS {k}" for k in keys
    )


#: Agent heartbeats of the selected clusters and nodes (fleet and pipeline dashboards).
HB_WHERE = "$__timeFilter(ts) AND @cluster AND @node"
