"""What a simulated training job looks like: its shape, schedule and parallel layout.

:class:`JobSpec` is the one frozen, validated description of a job; :class:`Emit` is one
wire record the simulator hands to its caller, with the topic and key to send it under.
Ranks are laid out node by node (rank ``r`` runs on node ``r // gpus_per_node``, GPU
``r % gpus_per_node``) and within the parallel grid as Megatron does: tensor-parallel
rank fastest, then pipeline stage, then data-parallel replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from trainguard.schemas.records import CheckpointEvent, GpuSampleBatch, Heartbeat, StepBatch

__all__ = ["DEFAULT_START_TS", "Emit", "JobSpec", "SimRecord"]

#: Event time of a simulator's first tick unless told otherwise (2027-01-15, UTC).
DEFAULT_START_TS = 1_800_000_000.0

#: The records a simulator emits.
SimRecord = GpuSampleBatch | StepBatch | CheckpointEvent | Heartbeat

_MAX_NAME = 256


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class JobSpec:
    """Shape and schedule of one simulated training job; validated on creation."""

    job_id: str = "job-0"
    cluster: str = "sim"
    nodes: int = 4
    gpus_per_node: int = 8
    tp_size: int = 1
    pp_size: int = 1
    #: Nodes are named ``f"{node_prefix}-{i:02d}"``.
    node_prefix: str = "node"
    #: Optimizer steps between checkpoint saves.
    checkpoint_every: int = 300
    #: Ticks without steps while a checkpoint is written (every GPU dips).
    checkpoint_pause_s: int = 8
    #: Optimizer steps between evaluation phases (0: none); each lasts ``eval_s`` ticks.
    eval_every: int = 0
    eval_s: int = 10
    warmup_steps: int = 100
    base_lr: float = 3e-4
    total_steps: int = 100_000
    # -- noise (the defaults are the simulator's historical values) ----------------------
    #: Relative gaussian noise of a rank's micro-batch loss and of its local grad norm.
    loss_noise: float = 0.03
    grad_noise: float = 0.03
    #: Relative gaussian noise of a rank's compute time.
    compute_noise: float = 0.02
    #: Bursty, heavy-tailed compute time (a shared CPU host): per rank and step, the chance
    #: that a burst starts; it lasts 1..``burst_steps`` steps and multiplies the rank's
    #: compute time by a factor drawn from 1.1..``burst_max``. 0: no bursts.
    burst_p: float = 0.0
    burst_steps: int = 4
    burst_max: float = 1.6
    #: Chance per step that one rank's dataloader stalls it 2-3x for one step.
    stall_p: float = 1 / 400
    #: Optimizer steps per data epoch; > 0: ranks report ``data_epoch`` and their seed
    #: fingerprint changes with it (a new shuffle each epoch). 0: not reported.
    epoch_steps: int = 0

    def __post_init__(self) -> None:
        self._check_noise()
        for name in ("job_id", "cluster", "node_prefix"):
            value = getattr(self, name)
            _require(
                isinstance(value, str) and 0 < len(value) <= _MAX_NAME - 4,
                f"{name} must be a non-empty string of at most {_MAX_NAME - 4} characters, "
                f"got {value!r}",
            )
        _require(self.nodes >= 1, f"nodes must be >= 1, got {self.nodes}")
        _require(
            1 <= self.gpus_per_node <= 256,
            f"gpus_per_node must be within 1..256, got {self.gpus_per_node}",
        )
        _require(self.tp_size >= 1, f"tp_size must be >= 1, got {self.tp_size}")
        _require(self.pp_size >= 1, f"pp_size must be >= 1, got {self.pp_size}")
        _require(
            self.world_size % (self.tp_size * self.pp_size) == 0,
            f"tp_size * pp_size = {self.tp_size * self.pp_size} must divide the world size "
            f"{self.world_size} (nodes {self.nodes} x gpus_per_node {self.gpus_per_node})",
        )
        _require(
            self.checkpoint_every >= 1,
            f"checkpoint_every must be >= 1, got {self.checkpoint_every}",
        )
        _require(
            self.checkpoint_pause_s >= 0,
            f"checkpoint_pause_s must be >= 0, got {self.checkpoint_pause_s}",
        )
        _require(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")
        _require(self.eval_s >= 1, f"eval_s must be >= 1, got {self.eval_s}")
        _require(self.total_steps >= 1, f"total_steps must be >= 1, got {self.total_steps}")
        _require(
            0 <= self.warmup_steps <= self.total_steps,
            f"warmup_steps must be within 0..total_steps ({self.total_steps}), "
            f"got {self.warmup_steps}",
        )
        _require(
            math.isfinite(self.base_lr) and self.base_lr > 0,
            f"base_lr must be a finite number > 0, got {self.base_lr}",
        )

    def _check_noise(self) -> None:
        for name in ("loss_noise", "grad_noise", "compute_noise"):
            value = getattr(self, name)
            _require(math.isfinite(value) and 0 <= value <= 0.5,
                     f"{name} must be within 0..0.5 (relative), got {value}")
        for name in ("burst_p", "stall_p"):
            value = getattr(self, name)
            _require(math.isfinite(value) and 0 <= value <= 1,
                     f"{name} must be a probability within 0..1, got {value}")
        _require(self.burst_steps >= 1, f"burst_steps must be >= 1, got {self.burst_steps}")
        _require(math.isfinite(self.burst_max) and self.burst_max >= 1.1,
                 f"burst_max must be >= 1.1, got {self.burst_max}")
        _require(self.epoch_steps >= 0, f"epoch_steps must be >= 0, got {self.epoch_steps}")

    @property
    def world_size(self) -> int:
        """Number of ranks: one per GPU."""
        return self.nodes * self.gpus_per_node

    @property
    def dp_size(self) -> int:
        """Number of data-parallel replicas."""
        return self.world_size // (self.tp_size * self.pp_size)

    def node_name(self, index: int) -> str:
        """Name of node ``index``."""
        return f"{self.node_prefix}-{index:02d}"

    def node_names(self) -> list[str]:
        """Names of every node, in rank order."""
        return [self.node_name(i) for i in range(self.nodes)]

    def coords(self, rank: int) -> tuple[int, int, int]:
        """``(dp_rank, tp_rank, pp_rank)`` of ``rank``."""
        tp, pp = self.tp_size, self.pp_size
        return rank // (tp * pp), rank % tp, (rank // tp) % pp

    def replicas_of(self, rank: int) -> list[int]:
        """Every rank holding the same parameters as ``rank`` (itself included)."""
        _, tp_rank, pp_rank = self.coords(rank)
        return [r for r in range(self.world_size) if self.coords(r)[1:] == (tp_rank, pp_rank)]

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step``: linear warmup, then cosine decay to 10 % of the base."""
        if step <= self.warmup_steps:
            return self.base_lr * step / max(1, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = 0.1 * self.base_lr
        return floor + (self.base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Emit:
    """One wire record to send: its topic (a ``Topics`` attribute name), key and record."""

    topic: Literal["samples", "steps", "heartbeats"]
    #: Kafka key: the job id (a node that left the job keys its samples by node name).
    key: bytes
    record: SimRecord
