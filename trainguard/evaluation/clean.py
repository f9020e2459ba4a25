"""Clean hours: every finding that long clean runs raised, by category and check.

``trainguard eval --clean-hours H`` runs ``clean_mix`` jobs (warmup and decay, checkpoint
pauses, eval phases, clean restarts, data epochs, dataloader stalls) for ``H`` job-hours
through the pipeline. Any ``integrity`` or ``availability`` finding there is a false alarm
(target: none); ``hardware`` and ``info`` findings are counted apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trainguard.evaluation.scorecard import SABOTAGE_CATEGORIES

__all__ = ["CleanSummary", "clean_summary", "clean_table"]


@dataclass(frozen=True)
class CleanSummary:
    """What clean runs raised."""

    job_hours: float
    jobs: int
    #: ``job check(blame)`` of every integrity / availability finding: false alarms.
    false_alarms: tuple[str, ...]
    #: Findings per (category, check), every category.
    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No integrity or availability finding at all."""
        return not self.false_alarms

    def per_category(self, category: str) -> int:
        """Findings of ``category``."""
        return sum(n for (cat, _), n in self.counts.items() if cat == category)


def clean_summary(rows: Iterable[Mapping[str, object]], *, job_hours: float,
                  jobs: int) -> CleanSummary:
    """Summarize the finding rows of clean runs."""
    counts: Counter[tuple[str, str]] = Counter()
    false = []
    for row in sorted(rows, key=lambda r: (str(r["job_id"]), float(str(r["ts"])))):
        category, check = str(row["category"]), str(row["check"])
        counts[(category, check)] += 1
        if category in SABOTAGE_CATEGORIES:
            who = ",".join([f"rank {r}" for r in sorted(_ints(row.get("ranks")))]
                           + sorted(str(n) for n in _seq(row.get("nodes")))) or "job"
            false.append(f"{row['job_id']} {check}({who})")
    return CleanSummary(job_hours, jobs, tuple(false), dict(counts))


def clean_table(summary: CleanSummary) -> str:
    """The summary as Markdown: one row per category, then the checks that fired."""
    lines = ["| category | findings | checks |", "|---|---|---|"]
    for category in ("integrity", "availability", "hardware", "info"):
        checks = sorted({c for (cat, c) in summary.counts if cat == category})
        shown = ", ".join(f"{c} ({summary.counts[(category, c)]})" for c in checks) or "—"
        lines.append(f"| {category} | {summary.per_category(category)} | {shown} |")
    return "\n".join(lines)


def _seq(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def _ints(value: object) -> list[int]:
    return [int(str(v)) for v in _seq(value)]
