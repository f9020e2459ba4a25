"""Benign scenarios: what healthy jobs do that a consistency check must not call sabotage.

Their :meth:`~trainguard.agents.sim.scenario.Scenario.expected` names no integrity or availability
check; a hardware fault (a hot GPU) names the hardware checks that should explain it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Literal

from trainguard.agents.sim.gpus import REASON_HW_THERMAL, REASON_SW_THERMAL, GpuOverride
from trainguard.agents.sim.scenario import Expectation, RestartScenario, Scenario
from trainguard.agents.sim.spec import JobSpec

if TYPE_CHECKING:
    from trainguard.agents.sim.job import JobSimulator

__all__ = [
    "CheckpointPause",
    "CleanMix",
    "CleanRestart",
    "EvalPhase",
    "JobResize",
    "LrSchedule",
    "NoisySteps",
    "ThermalThrottle",
]

_Kind = Literal["sabotage", "benign"]


def _positive(scenario: Scenario, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{scenario.name}: {key} must be >= 1, got {value}")


@dataclass(kw_only=True)
class CheckpointPause(Scenario):
    """Frequent checkpoint saves: every GPU of the job dips together, no steps meanwhile."""

    name: ClassVar[str] = "checkpoint_pause"
    kind: ClassVar[_Kind] = "benign"
    description: ClassVar[str] = "a checkpoint save every `every` steps, pause_s ticks each"
    every: int = 60
    pause_s: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, every=self.every, pause_s=self.pause_s)

    def adapt(self, spec: JobSpec) -> JobSpec:
        """Save every ``every`` steps."""
        return replace(spec, checkpoint_every=self.every, checkpoint_pause_s=self.pause_s)


@dataclass(kw_only=True)
class LrSchedule(Scenario):
    """A short schedule: warmup ends near ``at`` and the cosine decay shows within the run."""

    name: ClassVar[str] = "lr_schedule"
    kind: ClassVar[_Kind] = "benign"
    description: ClassVar[str] = (
        "linear warmup for warmup_steps (default: `at`), cosine decay to total_steps"
    )
    warmup_steps: int | None = None
    total_steps: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        warmup = self.at if self.warmup_steps is None else self.warmup_steps
        if not 0 <= warmup < self.total_steps:
            raise ValueError(
                f"{self.name}: warmup_steps must be within 0..total_steps-1 "
                f"({self.total_steps - 1}), got {warmup}"
            )

    def adapt(self, spec: JobSpec) -> JobSpec:
        """Use the short schedule."""
        warmup = self.at if self.warmup_steps is None else self.warmup_steps
        return replace(spec, warmup_steps=warmup, total_steps=self.total_steps)


@dataclass(kw_only=True)
class EvalPhase(Scenario):
    """Evaluation phases: no optimizer steps for a while, moderate load on every GPU."""

    name: ClassVar[str] = "eval_phase"
    kind: ClassVar[_Kind] = "benign"
    description: ClassVar[str] = "an eval phase of eval_s ticks every `every` steps"
    every: int = 100
    eval_s: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, every=self.every, eval_s=self.eval_s)

    def adapt(self, spec: JobSpec) -> JobSpec:
        """Turn eval phases on."""
        return replace(spec, eval_every=self.every, eval_s=self.eval_s)


@dataclass(kw_only=True)
class CleanRestart(RestartScenario):
    """Every rank stops, then all load the last checkpoint intact and resume from its step."""

    name: ClassVar[str] = "clean_restart"
    kind: ClassVar[_Kind] = "benign"
    description: ClassVar[str] = (
        "all ranks down for down_s ticks, then they load the last checkpoint (digests "
        "match) and step numbers go back to it"
    )
    down_s: int = 20


@dataclass(kw_only=True)
class ThermalThrottle(Scenario):
    """One GPU overheats and throttles; its rank slows a little. A hardware matter."""

    name: ClassVar[str] = "thermal_throttle"
    kind: ClassVar[_Kind] = "benign"
    description: ClassVar[str] = (
        "one GPU at temp_c with thermal clock-event reasons (0x20|0x40) and clock_mhz; its "
        "rank's compute time rises by `slowdown`"
    )
    node: int | None = None
    gpu: int | None = None
    slowdown: float = 1.15
    temp_c: float = 92.0
    clock_mhz: int = 1410
    culprit_node: int = field(init=False)
    culprit_gpu: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.slowdown >= 1:
            raise ValueError(f"{self.name}: slowdown must be >= 1, got {self.slowdown}")
        _positive(self, clock_mhz=self.clock_mhz)
        self.culprit_node = self._node(self.node)
        g = self.spec.gpus_per_node
        if self.gpu is None:
            self.culprit_gpu = self._rng.randrange(g)
        elif 0 <= self.gpu < g:
            self.culprit_gpu = self.gpu
        else:
            raise ValueError(f"{self.name}: gpu {self.gpu} out of range 0..{g - 1}")

    @property
    def culprit(self) -> int:
        """The rank on the hot GPU."""
        return self.culprit_node * self.spec.gpus_per_node + self.culprit_gpu

    def start(self, sim: JobSimulator) -> None:
        """Heat the GPU up and slow its rank."""
        sim.knobs.gpu[(self.culprit_node, self.culprit_gpu)] = GpuOverride(
            sm_clock_mhz=self.clock_mhz, reasons=REASON_SW_THERMAL | REASON_HW_THERMAL,
            temp_c=self.temp_c,
        )
        sim.knobs.compute_factor[self.culprit] = self.slowdown

    def expected(self) -> Expectation:
        """No integrity check; gpu_throttled (hardware) on the GPU's node and rank."""
        return self._blame(set(), [self.culprit], None, self.at,
                           hardware=frozenset({"gpu_throttled"}),
                           tolerated=frozenset({"straggler"}))


@dataclass(kw_only=True)
class JobResize(Scenario):
    """A planned shrink: the last node leaves the job; the others go on with a smaller world."""

    name: ClassVar[str] = "job_resize"
    kind: ClassVar[_Kind] = "benign"
    description: ClassVar[str] = (
        "the last node leaves at `at`: its ranks stop, the others report the smaller "
        "world_size from that step on"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self._need_nodes()
        if self.spec.gpus_per_node % (self.spec.tp_size * self.spec.pp_size):
            raise ValueError(
                f"{self.name}: a node ({self.spec.gpus_per_node} GPUs) must hold whole model "
                f"replicas (tp_size * pp_size = {self.spec.tp_size * self.spec.pp_size})"
            )

    def start(self, sim: JobSimulator) -> None:
        """Release the last node."""
        last = self.spec.nodes - 1
        sim.knobs.in_job[last] = False
        for r in self._node_ranks(last):
            sim.knobs.alive[r] = False
        sim.knobs.world_size -= self.spec.gpus_per_node


@dataclass(kw_only=True)
class NoisySteps(Scenario):
    """A healthy job on shared, busy hosts: step times noisy, heavy-tailed and bursty.

    Modelled on a real 4-rank PyTorch DDP job on shared CPUs, where each rank's step time
    exceeded 1.1x the median in about 30 % of steps: 15 % gaussian noise plus bursts of
    1-4 slow steps (up to 1.6x) starting on 6 % of a rank's steps give each rank of a
    16-rank job > 1.1x its peers' median in ~27 % of steps, and a dataloader stall on 2 %.
    """

    name: ClassVar[str] = "noisy_steps"
    kind: ClassVar[_Kind] = "benign"
    description: ClassVar[str] = (
        "compute_noise relative noise and bursts (burst_p per rank-step, 1..burst_steps "
        "steps, up to burst_max x) on every rank from the start, loss_noise on the loss"
    )
    compute_noise: float = 0.15
    burst_p: float = 0.06
    burst_steps: int = 4
    burst_max: float = 1.6
    loss_noise: float = 0.05
    stall_p: float = 1 / 50

    def adapt(self, spec: JobSpec) -> JobSpec:
        """The noisy job (validated by the spec)."""
        return replace(spec, compute_noise=self.compute_noise, burst_p=self.burst_p,
                       burst_steps=self.burst_steps, burst_max=self.burst_max,
                       loss_noise=self.loss_noise, stall_p=self.stall_p)


@dataclass(kw_only=True)
class CleanMix(Scenario):
    """A long, clean run with everything a healthy job does, for false-alarm hours.

    lr warmup for ``warmup_steps`` then cosine decay to ``total_steps``; a checkpoint every
    ``checkpoint_every`` steps (``pause_s`` ticks without steps); an eval phase every
    ``eval_every`` steps (``eval_s`` ticks); a clean restart from the last checkpoint every
    ``restart_every`` ticks (down ``down_s`` ticks); a new data epoch every ``epoch_steps``
    steps (``data_epoch`` and the seed fingerprint change alike on every rank); dataloader
    stalls with chance ``stall_p`` per step.
    """

    name: ClassVar[str] = "clean_mix"
    kind: ClassVar[_Kind] = "benign"
    description: ClassVar[str] = (
        "warmup + cosine decay, checkpoint pauses, eval phases, a clean restart every "
        "restart_every ticks, data epochs and dataloader stalls: a long clean run"
    )
    warmup_steps: int = 200
    total_steps: int = 20_000
    checkpoint_every: int = 250
    pause_s: int = 8
    eval_every: int = 400
    eval_s: int = 15
    restart_every: int = 1200
    down_s: int = 20
    epoch_steps: int = 700
    stall_p: float = 1 / 100

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, checkpoint_every=self.checkpoint_every, pause_s=self.pause_s,
                  eval_every=self.eval_every, eval_s=self.eval_s,
                  restart_every=self.restart_every, down_s=self.down_s,
                  epoch_steps=self.epoch_steps, total_steps=self.total_steps)
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"{self.name}: warmup_steps must be within 0..total_steps-1 "
                             f"({self.total_steps - 1}), got {self.warmup_steps}")

    def adapt(self, spec: JobSpec) -> JobSpec:
        """The schedule, checkpoints, evals, epochs and stalls of the mix."""
        return replace(spec, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                       checkpoint_every=self.checkpoint_every,
                       checkpoint_pause_s=self.pause_s, eval_every=self.eval_every,
                       eval_s=self.eval_s, epoch_steps=self.epoch_steps,
                       stall_p=self.stall_p)

    def on_tick(self, sim: JobSimulator, t: int) -> None:
        """Restart cleanly from the last checkpoint every ``restart_every`` ticks."""
        if t > 0 and t % self.restart_every == 0 and sim.checkpoints:
            sim.restart(self.down_s)
