"""``trainguard eval``: the detection scorecard — every scenario through the real pipeline."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, replace
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
                   help="also write the scorecard (sweeps, clean hours) into FILE between "
                        "its markers")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME",
                   choices=["straggler", "loss", "lr", "all"],
                   help="size sweep to run (straggler, loss, lr or all; repeatable): every "
                        "size x every seed, beside the --scenario runs (default: none)")
    p.add_argument("--plots-dir", type=Path, default=Path("docs/img"),
                   help="where the sweeps' PNG plots go (default: %(default)s)")
    p.add_argument("--clean-hours", type=float, metavar="H",
                   help="instead: clean_mix jobs for H job-hours in total; report every "
                        "finding (integrity/availability ones are false alarms)")
    p.add_argument("--clean-jobs", type=int, default=4,
                   help="jobs side by side for --clean-hours (default: %(default)s)")
    add_bootstrap(p, default="")
    add_json_flag(p, "the scorecard (per scenario and per run; progress goes to stderr)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from trainguard.evaluation.sweep import resolve_sweeps

    if args.log_level == "INFO":
        logging.getLogger().setLevel(logging.WARNING)  # the progress lines are the output
    if args.clean_hours is not None:
        return _run_clean(args)
    sweeps, skipped = resolve_sweeps(args.sweep)
    for note in skipped:
        _say(args, f"[eval] {note}")
    if args.sweep and not sweeps and not args.scenario:
        _say(args, "[eval] no sweep left to run")
        return 1
    variants = tuple(v for s in sweeps for v in s.variants())
    report = _evaluate(args, tuple(args.scenario), variants, args.ticks,
                       tuple(range(args.seeds)))
    plain = _plain(report, {v.label for v in variants})
    if plain.results and not args.json:
        _print_table(plain)
    ok = plain.passed
    outputs = _sweeps_out(args, sweeps, report) if sweeps else []
    ok = ok and all(p.false_alerts == 0 for o in outputs for p in o.points)
    if args.json:
        doc = scorecard_doc(plain)
        doc["sweeps"] = [{"sweep": o.sweep.name, "scenario": o.sweep.scenario,
                          "param": o.sweep.param, "plot": str(o.plot) if o.plot else None,
                          "points": [{**asdict(p), "rate": p.rate} for p in o.points]}
                         for o in outputs]
        print_json(doc)
    if args.write_benchmarks and plain.results:
        _write_benchmarks(args.write_benchmarks, plain)
    return 0 if ok else 1


def _say(args: argparse.Namespace, line: str) -> None:
    import sys

    print(line, file=sys.stderr if args.json else sys.stdout, flush=True)


def _evaluate(args: argparse.Namespace, scenarios: tuple[str, ...], variants: tuple[Any, ...],
              ticks: int, seeds: tuple[int, ...]) -> EvalReport:
    from trainguard.evaluation import EvalOptions, run_eval

    opts = EvalOptions(data_dir=args.data_dir, scenarios=scenarios, variants=variants,
                       seeds=seeds, ticks=ticks, nodes=args.nodes, gpus=args.gpus,
                       speed=args.speed, bootstrap=args.bootstrap or None)
    return run_eval(opts, out=lambda line: _say(args, line))


def _plain(report: EvalReport, variants: set[str]) -> EvalReport:
    """The report without the runs of ``variants`` (sweep sizes): the scorecard."""
    from trainguard.evaluation.scorecard import markdown_table, summarize

    results = [r for r in report.results if r.scenario not in variants]
    return replace(report, results=results, table=markdown_table(summarize(results)))


def _header(report: EvalReport) -> str:
    import shlex
    import sys
    from datetime import UTC, datetime

    from trainguard.evaluation import latency_line

    command = "trainguard eval " + shlex.join(sys.argv[2:])
    return (f"Command: `{command}`; date: {datetime.now(UTC):%Y-%m-%d}; {report.produced} "
            f"messages in {report.seconds:.0f} s of wall time; {latency_line(report)}.")


def _sweeps_out(args: argparse.Namespace, sweeps: list[Any], report: EvalReport) -> list[Any]:
    """Print the sweeps (and write their block and plots); their outputs."""
    from trainguard.evaluation.extras import SWEEP_MARKERS, sweep_block, sweep_outputs, write_block

    outputs = sweep_outputs(sweeps, report, args.plots_dir)
    for o in outputs:
        _say(args, f"\n{o.table}\n" + (f"[eval] plot: {o.plot}" if o.plot else ""))
    if args.write_benchmarks:
        base = args.write_benchmarks.parent
        write_block(args.write_benchmarks, SWEEP_MARKERS,
                    sweep_block(outputs, _header(report), base))
        _say(args, f"[eval] sweeps written to {args.write_benchmarks}")
    return outputs


def _run_clean(args: argparse.Namespace) -> int:
    from trainguard.evaluation.extras import (
        CLEAN_MARKERS,
        clean_block,
        clean_plan,
        clean_result,
        write_block,
    )

    plan = clean_plan(args.clean_hours, args.clean_jobs)
    report = _evaluate(args, ("clean_mix",), (), plan.ticks, tuple(range(plan.jobs)))
    summary = clean_result(plan, report)
    block = clean_block(summary, _header(report))
    if args.json:
        print_json({"passed": summary.passed, "job_hours": summary.job_hours,
                    "jobs": summary.jobs, "false_alarms": list(summary.false_alarms),
                    "counts": [{"category": cat, "check": check, "findings": n}
                               for (cat, check), n in sorted(summary.counts.items())]})
    else:
        print("\n" + block)
    if args.write_benchmarks:
        write_block(args.write_benchmarks, CLEAN_MARKERS, block)
        _say(args, f"[eval] clean hours written to {args.write_benchmarks}")
    return 0 if summary.passed else 1


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
