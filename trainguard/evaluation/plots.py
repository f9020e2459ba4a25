"""Sweep plots: detection rate and median time to detect against fault size, as a PNG.

Drawn as :mod:`trainguard.report.draw` draws panels: a bare matplotlib ``Figure`` (Agg),
which leaves pyplot's global state alone, in the report's colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainguard.evaluation.scorecard import TARGET_S
from trainguard.evaluation.sweep import Sweep, SweepPoint

__all__ = ["draw_sweep"]

_LINE, _TARGET = "#d62728", "#7b3294"  # trainguard.report.draw's blamed and fault colours
_SIZE_IN, _DPI = (10.0, 3.6), 100


def draw_sweep(path: Path, sweep: Sweep, points: Sequence[SweepPoint], *,
               severity: str | None = "subtle") -> Path:
    """Draw ``points`` of ``sweep`` into ``path``: two panels side by side; returns ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    rate_ax, ttd_ax = fig.subplots(1, 2)
    xs = [p.value for p in points]
    fig.suptitle(f"{sweep.name} sweep: {sweep.scenario} {sweep.param} "
                 f"({points[0].runs if points else 0} seeds per size)",
                 fontsize=11, fontweight="bold")
    rate_ax.plot(xs, [100 * p.rate for p in points], marker="o", color=_LINE)
    rate_ax.set_ylim(-5, 105)
    rate_ax.set_ylabel("detected (% of seeds)")
    timed = [(p.value, p.ttd_median_s) for p in points if p.ttd_median_s is not None]
    if timed:
        ttd_ax.plot([x for x, _ in timed], [t for _, t in timed], marker="o", color=_LINE,
                    label="median")
        worst = [(p.value, p.ttd_worst_s) for p in points if p.ttd_worst_s is not None]
        ttd_ax.plot([x for x, _ in worst], [t for _, t in worst], marker="v", ls=":",
                    color=_LINE, alpha=0.6, label="worst")
    else:
        ttd_ax.text(0.5, 0.5, "nothing detected", ha="center", va="center",
                    transform=ttd_ax.transAxes, color="#666")
    target = TARGET_S.get(severity or "")
    if target is not None:
        ttd_ax.axhline(target, color=_TARGET, ls="--", lw=1, label=f"target {target:.0f} s")
    ttd_ax.set_ylabel("time to detect (s, event time)")
    ttd_ax.set_ylim(bottom=0)
    if timed or target is not None:
        ttd_ax.legend(loc="upper right", fontsize=8)
    for ax in (rate_ax, ttd_ax):
        ax.set_xlabel(sweep.axis)
        if xs:
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
