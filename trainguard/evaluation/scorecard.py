"""Scoring the consistency checks against the simulator's ground truth.

Pure functions: the findings a run produced (as stored, one dict per ``findings`` row)
and each scenario's :class:`~trainguard.agents.sim.Expectation` in, a verdict per run and a summary
per scenario out. ``trainguard eval`` feeds it the real pipeline's findings.

A *sabotage alert* is a finding of category ``integrity`` or ``availability``: what would
page someone as possible sabotage or disruption. ``hardware`` and ``info`` findings are
not sabotage alerts.

For a sabotage run, **detected** means a finding of one of the expected checks blamed
exactly the culprits: every rank and node it names is a culprit, and it names at least
one (for a job-wide fault, :attr:`Expectation.job_wide`, a finding naming no rank or node,
the job, is right too). **Time to detect** is the event time at which the first such
finding was decided (its ``ts``) minus the time the fault started. A **false alert** is a
sabotage alert that is neither such a correct detection nor a tolerated side effect (a
tolerated check blaming only culprits, e.g. ``node_idle`` for a killed node). For a benign
run every sabotage alert is false.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainguard.agents.sim import Expectation
from trainguard.schemas.records import CheckName, check_name

__all__ = ["RunResult", "ScenarioSummary", "markdown_table", "score_run", "summarize"]

SABOTAGE_CATEGORIES = frozenset({"integrity", "availability"})
#: Time-to-detect targets of issue #5, by the scenario's severity.
TARGET_S = {"hard": 10.0, "subtle": 120.0}


@dataclass(frozen=True)
class RunResult:
    """The verdict on one (scenario, seed) run."""

    scenario: str
    kind: str
    seed: int
    detected: bool
    checks_fired: tuple[CheckName, ...]
    blamed: tuple[str, ...]
    ttd_s: float | None
    false_alerts: tuple[str, ...]
    hardware: tuple[CheckName, ...]
    severity: str | None


def _blame(row: Mapping[str, Any]) -> tuple[set[int], set[str]]:
    return {int(r) for r in row.get("ranks") or []}, {str(n) for n in row.get("nodes") or []}


def _blames_only(row: Mapping[str, Any], exp: Expectation) -> bool:
    ranks, nodes = _blame(row)
    if not ranks and not nodes:
        return exp.job_wide  # a job-wide finding names the job, no rank or node
    return ranks <= set(exp.culprit_ranks) and nodes <= set(exp.culprit_nodes)


def _label(row: Mapping[str, Any]) -> str:
    ranks, nodes = _blame(row)
    who = ",".join([f"rank {r}" for r in sorted(ranks)] + sorted(nodes)) or "job"
    return f"{row['check']}({who})"


def _check(row: Mapping[str, Any]) -> CheckName:
    return check_name(str(row["check"]))


def score_run(scenario: str, kind: str, seed: int, exp: Expectation,
              findings: Iterable[Mapping[str, Any]]) -> RunResult:
    """Score one run's findings (rows of the ``findings`` table, times as epoch floats)."""
    rows = sorted(findings, key=lambda r: float(r["ts"]))
    correct = [r for r in rows if r["category"] in SABOTAGE_CATEGORIES
               and _check(r) in exp.checks and _blames_only(r, exp)]
    false = [r for r in rows if r["category"] in SABOTAGE_CATEGORIES and r not in correct
             and not (_check(r) in exp.tolerated and _blames_only(r, exp))]
    hardware = [r for r in rows if r["category"] == "hardware"]
    ttd = float(correct[0]["ts"]) - exp.starts_at_ts if correct else None
    return RunResult(
        scenario=scenario, kind=kind, seed=seed, detected=bool(correct),
        checks_fired=tuple(sorted({_check(r) for r in correct})),
        blamed=tuple(dict.fromkeys(_label(r) for r in correct)),
        ttd_s=ttd, false_alerts=tuple(_label(r) for r in false),
        hardware=tuple(sorted({_check(r) for r in hardware})),
        severity=exp.severity,
    )


@dataclass
class ScenarioSummary:
    """One scenario over its seeds."""

    scenario: str
    kind: str
    severity: str | None
    runs: int = 0
    detected: int = 0
    checks: set[CheckName] = field(default_factory=set)
    ttds: list[float] = field(default_factory=list)
    false_alerts: int = 0
    hardware: set[CheckName] = field(default_factory=set)

    @property
    def passed(self) -> bool:
        """Every seed detected in time (sabotage) or silent (benign), no false alert."""
        if self.false_alerts:
            return False
        if self.kind == "benign":
            return True
        target = TARGET_S.get(self.severity or "", float("inf"))
        return self.detected == self.runs and all(t <= target for t in self.ttds)


def summarize(results: Sequence[RunResult]) -> list[ScenarioSummary]:
    """Group run results by scenario, in first-seen order."""
    out: dict[str, ScenarioSummary] = {}
    for r in results:
        s = out.setdefault(r.scenario, ScenarioSummary(r.scenario, r.kind, r.severity))
        s.runs += 1
        s.detected += r.detected
        s.checks.update(r.checks_fired)
        if r.ttd_s is not None:
            s.ttds.append(r.ttd_s)
        s.false_alerts += len(r.false_alerts)
        s.hardware.update(r.hardware)
    return list(out.values())


def _ttd(s: ScenarioSummary) -> str:
    if not s.ttds:
        return "—"
    return f"{statistics.median(s.ttds):.0f} / {max(s.ttds):.0f}"


def markdown_table(summaries: Sequence[ScenarioSummary]) -> str:
    """The scorecard as a Markdown table."""
    lines = [
        "| scenario | kind | detected (culprit right) | check that fired | time to detect, "
        "median / worst (s, event time) | target | false sabotage alerts | hardware findings "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        target = f"≤ {TARGET_S[s.severity]:.0f} s" if s.severity in TARGET_S else "—"
        detected = f"{s.detected}/{s.runs}" if s.kind == "sabotage" else "—"
        lines.append(
            f"| {s.scenario} | {s.kind} | {detected} | {', '.join(sorted(s.checks)) or '—'} "
            f"| {_ttd(s)} | {target} | {s.false_alerts} | "
            f"{', '.join(sorted(s.hardware)) or '—'} | {'pass' if s.passed else 'FAIL'} |"
        )
    return "\n".join(lines)
