"""Helpers to read what a JobSimulator emitted."""

from __future__ import annotations

from collections import defaultdict

from trainguard.agents.sim import Emit
from trainguard.schemas.records import CheckpointEvent, GpuSampleBatch, StepBatch, StepRecord


def steps(emits: list[Emit]) -> list[StepRecord]:
    return [s for e in emits if isinstance(e.record, StepBatch) for s in e.record.steps]


def by_ts(emits: list[Emit]) -> dict[float, list[StepRecord]]:
    """Step records grouped by the tick (event time) they were reported in."""
    out: dict[float, list[StepRecord]] = defaultdict(list)
    for s in steps(emits):
        out[s.ts].append(s)
    return dict(out)


def samples(emits: list[Emit]) -> list[GpuSampleBatch]:
    return [e.record for e in emits if isinstance(e.record, GpuSampleBatch)]


def checkpoints(emits: list[Emit], action: str | None = None) -> list[CheckpointEvent]:
    return [
        e.record for e in emits
        if isinstance(e.record, CheckpointEvent) and action in (None, e.record.action)
    ]


def replicas_agree(records: list[StepRecord]) -> bool:
    """Replicas (equal tp and pp rank) report one param_checksum at a step."""
    seen: dict[tuple[int | None, int | None], set[str | None]] = defaultdict(set)
    for r in records:
        seen[(r.tp_rank, r.pp_rank)].add(r.param_checksum)
    return all(len(v) == 1 for v in seen.values())


def mean(values: list[float]) -> float:
    return sum(values) / len(values)
