"""The mutable state of a simulated job that scenarios change, and its checkpoints.

:class:`Knobs` holds, per rank and per node, everything a scenario may alter: who is
alive, what each rank's parameters descend from (its *lineage*), multipliers on its
learning rate, gradient, loss and compute time, its fingerprints, and GPU overrides.
The simulator reads it afresh every tick.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from trainguard.agents.sim.gpus import GpuOverride
from trainguard.agents.sim.spec import JobSpec

__all__ = ["Checkpoint", "Knobs", "digest"]


def digest(text: str, size: int = 8) -> str:
    """Hex digest (``2 * size`` characters) of ``text``: stable across runs and machines."""
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


@dataclass
class Knobs:
    """Per-rank and per-node state of a job; scenarios change it, the simulator reads it."""

    gpus_per_node: int
    #: Per rank: its process runs and reports steps.
    alive: list[bool]
    #: Per node: the node belongs to the job (its GPU batches carry the job id).
    in_job: list[bool]
    #: The world size ranks report (smaller after a planned resize).
    world_size: int
    #: Per rank: what its parameters descend from; replicas with equal lineage hold equal
    #: parameters, and a rank whose lineage departs from its replicas' has diverged.
    lineage: list[str]
    lr_factor: list[float]
    #: Per rank: factor on its local gradient before the all-reduce.
    grad_scale: list[float]
    #: Per rank: relative increase of its micro-batch loss.
    loss_bias: list[float]
    compute_factor: list[float]
    env_fingerprint: list[str]
    seed_fingerprint: list[str]
    #: GPU overrides by ``(node index, gpu index)``.
    gpu: dict[tuple[int, int], GpuOverride] = field(default_factory=dict)
    #: Live ranks are blocked in a collective (a peer is gone): no steps, GPUs spin.
    hung: bool = False
    #: Nodes whose agent is stopped: they send nothing (samples, steps, heartbeats), while
    #: their ranks train on.
    agent_down: set[int] = field(default_factory=set)

    @classmethod
    def initial(cls, spec: JobSpec, seed: int) -> Knobs:
        """A healthy job: every rank alive and in agreement."""
        n = spec.world_size
        env = digest(f"env|{spec.job_id}|{seed}", 16)
        seeds = digest(f"seeds|{spec.job_id}|{seed}", 16)
        return cls(
            gpus_per_node=spec.gpus_per_node,
            alive=[True] * n,
            in_job=[True] * spec.nodes,
            world_size=n,
            lineage=["0"] * n,
            lr_factor=[1.0] * n,
            grad_scale=[1.0] * n,
            loss_bias=[0.0] * n,
            compute_factor=[1.0] * n,
            env_fingerprint=[env] * n,
            seed_fingerprint=[seeds] * n,
        )

    def live_ranks(self) -> list[int]:
        """Ranks whose process runs on a node of the job."""
        g = self.gpus_per_node
        return [r for r, up in enumerate(self.alive) if up and self.in_job[r // g]]

    def revive(self) -> None:
        """Start every rank of the job's nodes again (a restart), unblocked."""
        g = self.gpus_per_node
        self.alive = [self.in_job[r // g] for r in range(len(self.alive))]
        self.hung = False


@dataclass
class Checkpoint:
    """A completed checkpoint: shard digests as saved, and shards as they are on disk now."""

    checkpoint_id: str
    step: int
    #: Per rank: the digest reported at save.
    saved: dict[int, str] = field(default_factory=dict)
    #: Per rank: ``(digest, lineage)`` of the shard on disk (changed by a corruption).
    disk: dict[int, tuple[str, str]] = field(default_factory=dict)
