"""Record factories for the consistency tests: a small job whose ranks report steps.

``FakeJob.step`` makes one StepBatch per node for one step, with micro-batch noise drawn
from a seeded generator and per-rank overrides; ``FakeJob.samples`` one GpuSampleBatch
per node. Ranks sit node by node (rank r on node r // gpus_per_node, GPU r % gpus).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.schemas.records import (
    CheckpointEvent,
    Finding,
    GpuSample,
    GpuSampleBatch,
    Record,
    StepBatch,
    StepRecord,
)

T0 = 1_800_000_000.0


class FakeJob:
    """A job of ``ranks`` ranks on nodes of ``gpus`` GPUs."""

    def __init__(self, ranks: int = 16, gpus: int = 8, *, seed: int = 0, job_id: str = "job-a",
                 cluster: str = "c1", tp: int | None = None, noise: bool = True) -> None:
        self.ranks, self.gpus, self.job_id, self.cluster, self.tp = ranks, gpus, job_id, cluster, tp
        self.rng = random.Random(seed)
        self.noise = noise
        self.seq = 0

    def node(self, rank: int) -> str:
        return f"node-{rank // self.gpus:02d}"

    @property
    def nodes(self) -> list[str]:
        return sorted({self.node(r) for r in range(self.ranks)})

    def record(self, rank: int, step: int, ts: float, world_size: int | None = None,
               **over: Any) -> StepRecord:
        g = self.rng.gauss if self.noise else (lambda mu, sd: 0.0)
        values: dict[str, Any] = dict(
            job_id=self.job_id, rank=rank, world_size=world_size or self.ranks,
            node=self.node(rank), step=step, ts=ts, local_rank=rank % self.gpus,
            gpu_index=rank % self.gpus, loss=2.0 * (1 + 0.03 * g(0, 1)), grad_norm=1.25,
            lr=3e-4, step_time_s=1.0, param_checksum=f"params-{step:06d}",
            env_fingerprint="env-0001", seed_fingerprint="seed-0001",
            local_grad_norm=1.25 * abs(1 + 0.03 * g(0, 1)),
            compute_time_s=0.9 * (1 + 0.02 * g(0, 1)),
        )
        if self.tp is not None:
            values.update(tp_rank=rank % self.tp, pp_rank=0, dp_rank=rank // self.tp)
            values["param_checksum"] = f"params-{step:06d}-tp{rank % self.tp}"
        values.update(over)
        return StepRecord(**values)

    def step(self, step: int, ts: float | None = None, *,
             over: Mapping[int, Mapping[str, Any]] | None = None, skip: Iterable[int] = (),
             ranks: Iterable[int] | None = None, world_size: int | None = None,
             delay: Mapping[int, float] | None = None) -> list[StepBatch]:
        """One step of every rank (but ``skip``), one batch per node."""
        ts = T0 + step if ts is None else ts
        over, delay, skipped = over or {}, delay or {}, set(skip)
        by_node: dict[str, list[StepRecord]] = {}
        for r in (range(self.ranks) if ranks is None else ranks):
            if r in skipped:
                continue
            rec = self.record(r, step, ts + delay.get(r, 0.0), world_size, **over.get(r, {}))
            by_node.setdefault(rec.node, []).append(rec)
        return [self._batch(node, recs) for node, recs in by_node.items()]

    def _batch(self, node: str, recs: list[StepRecord]) -> StepBatch:
        self.seq += 1
        return StepBatch(cluster=self.cluster, node=node, job_id=self.job_id,
                         ts=max(r.ts for r in recs), seq=self.seq, agent_id=f"agent-{node}",
                         steps=recs)

    def samples(self, ts: float, *, util: float = 95.0,
                over: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
                nodes: Iterable[str] | None = None) -> list[GpuSampleBatch]:
        """One GpuSampleBatch per node; ``over[(node, gpu)]`` changes one GPU's sample."""
        over = over or {}
        out = []
        for node in (self.nodes if nodes is None else nodes):
            gpus = []
            for i in range(self.gpus):
                fields: dict[str, Any] = dict(index=i, util_gpu_pct=util, sm_clock_mhz=1980,
                                              temp_c=60.0, clock_event_reasons=0)
                fields.update(over.get((node, i), {}))
                gpus.append(GpuSample(**fields))
            self.seq += 1
            out.append(GpuSampleBatch(cluster=self.cluster, node=node, ts=ts, seq=self.seq,
                                      agent_id=f"agent-{node}", gpus=gpus, job_id=self.job_id))
        return out

    def checkpoint(self, action: str, checkpoint_id: str, step: int, ts: float,
                   digests: Mapping[int, str] | None = None) -> list[CheckpointEvent]:
        digests = digests or {}
        return [CheckpointEvent(cluster=self.cluster, job_id=self.job_id, node=self.node(r),
                                rank=r, step=step, ts=ts, action=action,  # type: ignore[arg-type]
                                checkpoint_id=checkpoint_id,
                                digest=digests.get(r, f"{r:04x}beefcafe{step:06x}"))
                for r in range(self.ranks)]


def feed(stage: ConsistencyStage, batches: Iterable[list[Record] | list[StepBatch]]
         ) -> list[Finding]:
    """Observe each group of records in turn, then flush; every finding emitted."""
    found: list[Finding] = []
    for group in batches:
        found += stage.observe(group)
    found += stage.flush(stage.watermark + stage.config.wait_s)
    return found


def first(found: Iterable[Finding]) -> list[Finding]:
    """Each finding's first emission (a persisting fault is re-emitted with the same id)."""
    seen: dict[str, Finding] = {}
    for f in found:
        seen.setdefault(f.finding_id, f)
    return list(seen.values())


def checks(found: Iterable[Finding]) -> list[str]:
    """The checks of the distinct findings, in order of first emission."""
    return [f.check for f in first(found)]
