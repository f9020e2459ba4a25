"""Size sweeps: how detection depends on how big a fault is.

A :class:`Sweep` names one scenario, one of its parameters and the sizes to try
(:data:`SWEEPS`, data-driven: a sweep whose scenario is not registered in the simulator is
skipped and said so). Each size becomes a :class:`Variant` (a scenario with that parameter
set) run over every seed, side by side with the others in one ``trainguard eval`` run.

The pure parts live here: the variants of a sweep, the per-size summary
(:func:`sweep_points`: detection rate, median and worst time to detect, false alerts) and
its Markdown table, and the BENCHMARKS.md block between markers
(:func:`replace_block`). The plots are :mod:`trainguard.evaluation.plots`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trainguard.agents.sim import list_scenarios, scenario_params
from trainguard.errors import ConfigError
from trainguard.evaluation.scorecard import TARGET_S, RunResult

__all__ = [
    "SWEEPS", "Sweep", "SweepPoint", "Variant", "replace_block", "resolve_sweeps",
    "sweep_points", "sweep_table",
]


@dataclass(frozen=True)
class Variant:
    """One scenario with some parameters set, run under its own label."""

    label: str
    scenario: str
    params: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Sweep:
    """A scenario's parameter tried at several sizes."""

    name: str
    scenario: str
    param: str
    values: tuple[float, ...]
    #: What the parameter means, for the table and the plot's axis.
    axis: str

    def variant(self, value: float) -> Variant:
        """The run of this sweep at ``value``."""
        return Variant(f"{self.scenario}:{self.param}:{value:g}", self.scenario,
                       ((self.param, value),))

    def variants(self) -> list[Variant]:
        """Every size of the sweep, in order."""
        return [self.variant(v) for v in self.values]


#: The sweeps of issue #16: a straggler node, one rank's loss shift, a job-wide lr change.
SWEEPS: dict[str, Sweep] = {
    s.name: s for s in (
        Sweep("straggler", "node_slowdown", "factor", (1.03, 1.05, 1.1, 1.2, 1.5),
              "compute-time factor of one node"),
        Sweep("loss", "poisoned_data", "loss_increase", (0.01, 0.02, 0.03, 0.05, 0.1),
              "relative loss increase of one rank"),
        Sweep("lr", "job_lr_change", "lr_factor", (0.5, 0.8, 1.5, 2.0, 3.0),
              "lr factor of every rank"),
    )
}


def resolve_sweeps(names: Iterable[str]) -> tuple[list[Sweep], list[str]]:
    """The sweeps named (``all``: every one) whose scenario exists; and notes on skipped ones."""
    chosen: list[Sweep] = []
    for name in names:
        if name == "all":
            chosen += [s for s in SWEEPS.values() if s not in chosen]
        elif name in SWEEPS:
            if SWEEPS[name] not in chosen:
                chosen.append(SWEEPS[name])
        else:
            raise ConfigError(f"unknown sweep {name!r}; expected one of: "
                              f"{', '.join([*SWEEPS, 'all'])}")
    known = set(list_scenarios())
    ready, skipped = [], []
    for s in chosen:
        if s.scenario not in known:
            skipped.append(f"sweep {s.name}: scenario {s.scenario!r} is not registered, skipped")
        elif s.param not in scenario_params(s.scenario):
            skipped.append(f"sweep {s.name}: scenario {s.scenario!r} has no parameter "
                           f"{s.param!r}, skipped")
        else:
            ready.append(s)
    return ready, skipped


@dataclass(frozen=True)
class SweepPoint:
    """One size of a sweep over its seeds."""

    value: float
    runs: int
    detected: int
    ttd_median_s: float | None
    ttd_worst_s: float | None
    false_alerts: int
    #: Detected on every seed within the target time of the scenario's severity.
    in_target: bool

    @property
    def rate(self) -> float:
        """Fraction of seeds on which the fault was found (culprit right)."""
        return self.detected / self.runs if self.runs else 0.0


def sweep_points(sweep: Sweep, results: Sequence[RunResult]) -> list[SweepPoint]:
    """Per size of ``sweep``: detection rate and time to detect, from the runs' results."""
    points = []
    for value in sweep.values:
        label = sweep.variant(value).label
        mine = [r for r in results if r.scenario == label]
        ttds = sorted(r.ttd_s for r in mine if r.ttd_s is not None)
        target = TARGET_S.get(mine[0].severity or "", float("inf")) if mine else 0.0
        detected = sum(r.detected for r in mine)
        points.append(SweepPoint(
            value=value, runs=len(mine), detected=detected,
            ttd_median_s=statistics.median(ttds) if ttds else None,
            ttd_worst_s=ttds[-1] if ttds else None,
            false_alerts=sum(len(r.false_alerts) for r in mine),
            in_target=bool(mine) and detected == len(mine) and all(t <= target for t in ttds),
        ))
    return points


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def sweep_table(sweep: Sweep, points: Sequence[SweepPoint]) -> str:
    """One sweep as a Markdown table: a row per size."""
    lines = [
        f"| {sweep.scenario} `{sweep.param}` ({sweep.axis}) | detected | time to detect, "
        "median / worst (s, event time) | false sabotage alerts | all seeds within target |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(f"| {p.value:g} | {p.detected}/{p.runs} | {_s(p.ttd_median_s)} / "
                     f"{_s(p.ttd_worst_s)} | {p.false_alerts} | "
                     f"{'yes' if p.in_target else 'no'} |")
    return "\n".join(lines)


def replace_block(text: str, begin: str, end: str, block: str) -> str:
    """``text`` with what lies between the markers ``begin`` and ``end`` replaced by ``block``.

    Without the markers, the block (with its markers) is appended.
    """
    wrapped = f"{begin}\n{block.strip()}\n{end}"
    if begin in text and end in text.split(begin, 1)[1]:
        head, rest = text.split(begin, 1)
        return head + wrapped + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + wrapped + "\n"
