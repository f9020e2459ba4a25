"""The size sweeps' and clean hours' output: tables, plots and their BENCHMARKS.md blocks.

``trainguard eval`` calls these after a run; they read the run's :class:`EvalReport` and
write nothing but the files they are given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainguard.evaluation.clean import CleanSummary, clean_summary, clean_table
from trainguard.evaluation.plots import draw_sweep
from trainguard.evaluation.run import EvalReport
from trainguard.evaluation.sweep import Sweep, SweepPoint, replace_block, sweep_points, sweep_table

__all__ = [
    "CLEAN_MARKERS", "SWEEP_MARKERS", "CleanPlan", "SweepOutput", "clean_block", "clean_plan",
    "clean_result", "sweep_block", "sweep_outputs", "write_block",
]

SWEEP_MARKERS = ("<!-- sweeps:begin -->", "<!-- sweeps:end -->")
CLEAN_MARKERS = ("<!-- clean-hours:begin -->", "<!-- clean-hours:end -->")
#: Fault severity of the sweeps' scenarios (all subtle: target 120 s), for the plots.
_SEVERITY = "subtle"


@dataclass(frozen=True)
class SweepOutput:
    """One sweep's result: its points, table and plot."""

    sweep: Sweep
    points: list[SweepPoint]
    table: str
    plot: Path | None


def sweep_outputs(sweeps: Sequence[Sweep], report: EvalReport,
                  plot_dir: Path | None) -> list[SweepOutput]:
    """Per sweep: points, Markdown table and (with ``plot_dir``) ``sweep-<name>.png``."""
    out = []
    for s in sweeps:
        points = sweep_points(s, report.results)
        plot = (draw_sweep(plot_dir / f"sweep-{s.name}.png", s, points, severity=_SEVERITY)
                if plot_dir is not None else None)
        out.append(SweepOutput(s, points, sweep_table(s, points), plot))
    return out


def sweep_block(outputs: Sequence[SweepOutput], header: str, relative_to: Path) -> str:
    """The sweeps as one Markdown block: the header line, then per sweep a table and plot."""
    parts = [header]
    for o in outputs:
        parts.append(f"**{o.sweep.name}**: `{o.sweep.scenario}` × `{o.sweep.param}`\n\n"
                     f"{o.table}")
        if o.plot is not None:
            rel = _relative(o.plot, relative_to)
            parts.append(f"![{o.sweep.name} sweep: detection rate and time to detect]({rel})")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class CleanPlan:
    """How ``--clean-hours`` splits its job-hours: jobs side by side, ticks each."""

    hours: float
    jobs: int
    ticks: int


def clean_plan(hours: float, jobs: int) -> CleanPlan:
    """``jobs`` clean_mix jobs of equal length adding up to ``hours`` job-hours."""
    if not (math.isfinite(hours) and hours > 0):
        raise ValueError(f"clean hours must be > 0, got {hours}")
    if jobs < 1:
        raise ValueError(f"clean jobs must be >= 1, got {jobs}")
    ticks = max(160, round(hours * 3600 / jobs))
    return CleanPlan(jobs * ticks / 3600, jobs, ticks)


def clean_result(plan: CleanPlan, report: EvalReport) -> CleanSummary:
    """What the clean jobs of ``report`` raised."""
    return clean_summary(report.findings, job_hours=plan.hours, jobs=plan.jobs)


def clean_block(summary: CleanSummary, header: str) -> str:
    """The clean hours as a Markdown block: header, verdict, table, false alarms listed."""
    verdict = ("no integrity or availability finding" if summary.passed else
               f"{len(summary.false_alarms)} integrity/availability findings: "
               + "; ".join(summary.false_alarms[:20]))
    return (f"{header}\n\n{summary.job_hours:.1f} job-hours in {summary.jobs} `clean_mix` "
            f"jobs: {verdict}.\n\n{clean_table(summary)}")


def write_block(path: Path, markers: tuple[str, str], block: str) -> None:
    """Put ``block`` between ``markers`` in the file at ``path`` (appended when absent)."""
    path.write_text(replace_block(path.read_text(), markers[0], markers[1], block))


def _relative(target: Path, base: Path) -> str:
    try:
        return target.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return target.as_posix()
