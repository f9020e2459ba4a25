"""``trainguard report``: draw an incident's panels as PNGs and one HTML page that shows them.

``--alert ID`` takes the time range and the blamed node and rank from the alert;
``--job J --from T --to T`` draws a job's range, highlighting ``--node``/``--rank`` if
given. The store is opened read-only, so on an embedded store that a worker owns it reads
through the worker (as ``db query`` does). Arguments are checked before the store is
opened; a bad one is a :class:`~trainguard.errors.ConfigError` naming it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from trainguard.cli._common import add_store, parse_instant, store_url
from trainguard.errors import ConfigError

__all__ = ["register"]

#: Where reports go unless ``--out`` says otherwise: one folder per alert or job.
DEFAULT_ROOT = Path("trainguard-data/reports")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` command."""
    p = subparsers.add_parser(
        "report", help="draw an alert's (or a job's) panels as PNGs and an HTML page",
        description="Render the job dashboard's timeseries panels for an incident as PNG "
                    "images, with the blamed rank or node highlighted among its peers, and "
                    "one HTML page that shows them with the alert's summary, evidence and "
                    "links. Prints the paths written, the page last.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--alert", metavar="ID", help="alert id (see `trainguard alerts`)")
    which.add_argument("--job", metavar="J", help="job id; needs --from and --to")
    p.add_argument("--from", dest="start", metavar="ISO",
                   help="with --job: start, ISO 8601 with timezone, e.g. 2025-01-31T18:00Z")
    p.add_argument("--to", dest="end", metavar="ISO", help="with --job: end, ISO 8601")
    p.add_argument("--node", help="with --job: the node to highlight")
    p.add_argument("--rank", type=int, help="with --job: the rank to highlight")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help=f"output folder (default: {DEFAULT_ROOT}/<alert or job>)")
    add_store(p)
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    if args.alert is not None:
        extra = [f for f, v in (("--from", args.start), ("--to", args.end),
                                ("--node", args.node), ("--rank", args.rank)) if v is not None]
        if extra:
            raise ConfigError(f"{', '.join(extra)} go with --job; --alert takes the time range "
                              "and the blamed node and rank from the alert")
        start = end = None
    else:
        if args.start is None or args.end is None:
            raise ConfigError("--job needs --from and --to (ISO 8601 with timezone)")
        start, end = parse_instant("--from", args.start), parse_instant("--to", args.end)
        if start >= end:
            raise ConfigError(f"--from {args.start!r} is not before --to {args.end!r}")
        if args.rank is not None and args.rank < 0:
            raise ConfigError(f"--rank {args.rank} is negative; expected a rank >= 0")
    out = args.out or DEFAULT_ROOT / _folder(args.alert or args.job)

    from trainguard.pipeline.store import open_store
    from trainguard.report import render_report

    with open_store(store_url(args.store), read_only=True) as store:
        result = render_report(
            store, out_dir=out, alert_id=args.alert, job_id=args.job, start=start, end=end,
            node=args.node, rank=args.rank,
        )
    for path in (*result.images, result.html):
        print(path)
    return 0


def _folder(name: str) -> str:
    # Alert and job ids are free text: keep them from climbing out of the reports folder.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "report"


