"""``trainguard eval``: the detection scorecard — every scenario through the real pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainguard.cli._common import add_bootstrap

__all__ = ["register"]

_BEGIN = "<!-- scorecard:begin -->"
_END = "<!-- scorecard:end -->"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command."""
    p = subparsers.add_parser(
        "eval", help="run every sabotage and benign scenario through the pipeline and score it"
    )
    p.add_argument("--scenario", action="append", default=[], metavar="NAME",
                   help="run only this scenario (repeatable; default: all)")
    p.add_argument("--seeds", type=int, default=5,
                   help="seeds per scenario, 0..N-1 (default: %(default)s)")
    p.add_argument("--ticks", type=int, default=330,
                   help="seconds of event time per job; faults start at 150 (default: %(default)s)")
    p.add_argument("--nodes", type=int, default=4, help="nodes per job (default: %(default)s)")
    p.add_argument("--gpus", type=int, default=4, help="ranks per node (default: %(default)s)")
    p.add_argument("--speed", type=float, default=2.0,
                   help="ticks of every job per wall-clock second (default: %(default)s)")
    p.add_argument("--data-dir", type=Path, default=Path("trainguard-data"),
                   help="where the broker and the store of the run live (default: %(default)s)")
    p.add_argument("--write-benchmarks", type=Path, metavar="FILE",
                   help="also write the scorecard into FILE between the scorecard markers")
    add_bootstrap(p, default="")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging
    import shlex
    import sys
    from datetime import UTC, datetime

    from trainguard.evaluation import EvalOptions, latency_line, run_eval

    if args.log_level == "INFO":
        logging.getLogger().setLevel(logging.WARNING)  # the progress lines are the output
    opts = EvalOptions(data_dir=args.data_dir, scenarios=tuple(args.scenario),
                       seeds=tuple(range(args.seeds)), ticks=args.ticks, nodes=args.nodes,
                       gpus=args.gpus, speed=args.speed, bootstrap=args.bootstrap or None)
    report = run_eval(opts)
    print()
    print(report.table)
    print()
    print(f"[eval] {report.produced} messages in {report.seconds:.0f} s; {latency_line(report)}")
    if args.write_benchmarks:
        command = "trainguard eval " + shlex.join(sys.argv[2:])
        block = (f"{_BEGIN}\nCommand: `{command}`; date: {datetime.now(UTC):%Y-%m-%d}; "
                 f"{report.produced} messages in {report.seconds:.0f} s of wall time; "
                 f"{latency_line(report)}.\n\n{report.table}\n{_END}")
        text = args.write_benchmarks.read_text()
        if _BEGIN in text and _END in text:
            head, rest = text.split(_BEGIN, 1)
            text = head + block + rest.split(_END, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        args.write_benchmarks.write_text(text)
        print(f"[eval] scorecard written to {args.write_benchmarks}")
    return 0 if report.passed else 1
