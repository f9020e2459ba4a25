"""``trainguard eval``: the detection scorecard — every scenario through the real pipeline."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainguard.cli._common import add_bootstrap, add_json_flag, print_json

if TYPE_CHECKING:
    from trainguard.evaluation import EvalReport

__all__ = ["register", "scorecard_doc"]

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
    add_json_flag(p, "the scorecard (per scenario and per run; progress goes to stderr)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from trainguard.evaluation import EvalOptions, run_eval

    if args.log_level == "INFO":
        logging.getLogger().setLevel(logging.WARNING)  # the progress lines are the output
    opts = EvalOptions(data_dir=args.data_dir, scenarios=tuple(args.scenario),
                       seeds=tuple(range(args.seeds)), ticks=args.ticks, nodes=args.nodes,
                       gpus=args.gpus, speed=args.speed, bootstrap=args.bootstrap or None)
    if args.json:
        report = run_eval(opts, out=lambda line: print(line, file=sys.stderr, flush=True))
        print_json(scorecard_doc(report))
    else:
        report = run_eval(opts)
        _print_table(report)
    if args.write_benchmarks:
        _write_benchmarks(args.write_benchmarks, report)
    return 0 if report.passed else 1


def scorecard_doc(report: EvalReport) -> dict[str, Any]:
    """The scorecard as one JSON-ready document: verdict, per scenario, per run, latency."""
    from trainguard.evaluation.scorecard import summarize

    scenarios = []
    for s in summarize(report.results):
        scenarios.append({
            "scenario": s.scenario, "kind": s.kind, "severity": s.severity,
            "passed": s.passed, "runs": s.runs, "detected": s.detected,
            "checks": sorted(s.checks), "false_alerts": s.false_alerts,
            "hardware": sorted(s.hardware),
            "ttd_median_s": statistics.median(s.ttds) if s.ttds else None,
            "ttd_max_s": max(s.ttds) if s.ttds else None,
        })
    lat = report.wall_latency_s
    return {
        "passed": report.passed, "produced": report.produced, "seconds": report.seconds,
        "wall_latency_s": {"p50": statistics.median(lat) if lat else None,
                           "max": max(lat) if lat else None, "detections": len(lat)},
        "scenarios": scenarios,
        "runs": [asdict(r) for r in report.results],
    }


def _print_table(report: EvalReport) -> None:
    from trainguard.evaluation import latency_line

    print()
    print(report.table)
    print()
    print(f"[eval] {report.produced} messages in {report.seconds:.0f} s; {latency_line(report)}")


def _write_benchmarks(path: Path, report: EvalReport) -> None:
    import shlex
    import sys
    from datetime import UTC, datetime

    from trainguard.evaluation import latency_line

    command = "trainguard eval " + shlex.join(sys.argv[2:])
    block = (f"{_BEGIN}\nCommand: `{command}`; date: {datetime.now(UTC):%Y-%m-%d}; "
             f"{report.produced} messages in {report.seconds:.0f} s of wall time; "
             f"{latency_line(report)}.\n\n{report.table}\n{_END}")
    text = path.read_text()
    if _BEGIN in text and _END in text:
        head, rest = text.split(_BEGIN, 1)
        text = head + block + rest.split(_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    # stderr: with --json, stdout holds the JSON document alone.
    print(f"[eval] scorecard written to {path}", file=sys.stderr)
