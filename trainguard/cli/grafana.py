"""``trainguard grafana render|verify|push``: the dashboards as files, checked against a store.

``render`` writes the committed JSON (``infra/grafana/dashboards/<uid>.json``) from
:mod:`trainguard.grafana.dashboards`; ``verify`` runs every panel's and variable's query
against the store, as Grafana would for a time range, and exits 1 if any fails;
``push`` (from :mod:`trainguard.grafana.push_cli`, when present) uploads them to a Grafana.
The store opens read-only, so an embedded store a worker owns is read through it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import time
from datetime import datetime
from pathlib import Path

from trainguard.cli._common import add_json_flag, add_store, print_json, store_url
from trainguard.errors import ConfigError

__all__ = ["parse_time", "register"]

_RELATIVE = re.compile(r"(?:now)?\s*-\s*(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DETAIL_WIDTH = 100


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``grafana`` command with ``render``, ``verify`` and (if present) ``push``."""
    grafana = subparsers.add_parser(
        "grafana", help="render, verify and push the Grafana dashboards",
        description="The Grafana dashboards as code: write their JSON, run their queries "
                    "against a store, or push them to a Grafana.")
    sub = grafana.add_subparsers(dest="grafana_command", metavar="COMMAND", required=True)

    p = sub.add_parser("render", help="write the dashboards' JSON files",
                       description="Write one JSON file per dashboard, named by its uid. "
                                   "Commit the result: a test fails when it drifts.")
    p.add_argument("--out", type=Path, default=Path("infra/grafana/dashboards"),
                   help="directory to write to (default: %(default)s)")
    p.add_argument("--datasource-uid", default="trainguard-clickhouse",
                   help="uid of the ClickHouse data source in Grafana (default: %(default)s)")
    p.add_argument("--database", default="trainguard",
                   help="ClickHouse database the queries read (default: %(default)s)")
    p.set_defaults(func=_render)

    p = sub.add_parser("verify", help="run every panel's query against the store",
                       description="Expand each dashboard variable and panel query as Grafana "
                                   "and the ClickHouse plugin do, run it, and print one line "
                                   "per query. Exits 1 if any query errors, returns no rows, "
                                   "or returns other columns than its panel declares.")
    add_store(p)
    p.add_argument("--from", dest="start", default="now-1h",
                   help="range start: ISO 8601 with timezone, 'now', or now-DURATION such as "
                        "now-1h, now-30m (-1h works as --from=-1h) (default: %(default)s)")
    p.add_argument("--to", dest="end", default="now",
                   help="range end, same forms (default: %(default)s)")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="pin a variable, e.g. job=job-7 or node=node-01,node-02 (repeatable; "
                        "default: All, or a variable's first value)")
    p.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                   help="bucket size for $__timeInterval (default: range / 1000, >= 1 s)")
    add_json_flag(p, "the checks")
    p.set_defaults(func=_verify)

    # `push` lives in its own module (another command's dependencies and tests).
    if importlib.util.find_spec("trainguard.grafana.push_cli") is not None:
        push_cli = importlib.import_module("trainguard.grafana.push_cli")
        register_push = getattr(push_cli, "register_push", None)
        if register_push is not None:
            register_push(sub)


def parse_time(flag: str, text: str, now: float) -> float:
    """Epoch seconds of ``now``, ``now-30m`` / ``-1h``, or an ISO 8601 time with a timezone."""
    raw = text.strip()
    if raw == "now":
        return now
    relative = _RELATIVE.fullmatch(raw)
    if relative is not None:
        return now - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}; expected 'now', now-DURATION such as now-1h or "
                          "now-30m, or an ISO 8601 time such as 2025-01-31T18:00Z") from None
    if when.tzinfo is None:
        raise ConfigError(f"{flag} {text!r} has no timezone; add Z or an offset, e.g. {raw}Z")
    return when.timestamp()


def _variables(pairs: list[str]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--var {pair!r}; expected NAME=VALUE, e.g. job=job-7")
        values = [v.strip() for v in value.split(",")]
        out[name.strip()] = values if len(values) > 1 else values[0]
    return out


def _render(args: argparse.Namespace) -> int:
    from trainguard.grafana.render import write_all

    paths = write_all(args.out, datasource_uid=args.datasource_uid, database=args.database)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from trainguard.cli.db import format_table
    from trainguard.grafana.dashboards import all_dashboards
    from trainguard.grafana.verify import failures, verify
    from trainguard.pipeline.store import open_store

    now = time.time()
    start, end = parse_time("--from", args.start, now), parse_time("--to", args.end, now)
    if not start < end:
        raise ConfigError(f"--from {args.start!r} is not before --to {args.end!r}")
    if args.interval is not None and not args.interval > 0:
        raise ConfigError(f"--interval {args.interval!r}; expected seconds > 0")
    variables = _variables(args.var)
    url = store_url(args.store)
    with open_store(url, read_only=True) as store:
        checks = verify(store, all_dashboards(), start=start, end=end, variables=variables,
                        interval_s=args.interval)
    failed = failures(checks)
    if args.json:
        print_json(checks)
    else:
        rows = [(c.dashboard, c.panel, c.status, c.rows, _cut(c.error)) for c in checks]
        print(format_table(["dashboard", "panel", "status", "rows", "detail"], rows))
        print(f"{len(checks) - len(failed)} of {len(checks)} queries passed on {url}")
    return 1 if failed else 0


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_WIDTH else text[: _DETAIL_WIDTH - 1] + "…"
