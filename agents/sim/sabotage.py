"""Sabotage of a run's integrity: weights, optimizer, gradients, data, seeds, code, artefacts.

Each one names, in :meth:`~trainguard.agents.sim.scenario.Scenario.expected`, the checks that must
fire and the ranks and nodes they must blame. Culprits not given are drawn from the seed.
Sabotage of a run's availability (killed ranks, a slowed node) is in
:mod:`trainguard.agents.sim.availability`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from trainguard.agents.sim.scenario import Expectation, RestartScenario, Scenario, ramp
from trainguard.agents.sim.state import digest
from trainguard.schemas.records import CheckName

if TYPE_CHECKING:
    from trainguard.agents.sim.job import JobSimulator

__all__ = [
    "CheckpointCorruption",
    "CodeInjection",
    "GradientCorruption",
    "OptimizerTamper",
    "PoisonedData",
    "RngChange",
    "WeightTamper",
]

_Kind = Literal["sabotage", "benign"]


@dataclass(kw_only=True)
class WeightTamper(RestartScenario):
    """After a clean restart from a checkpoint, one rank's weights are changed in memory."""

    name: ClassVar[str] = "weight_tamper"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "restart from a checkpoint (digests match), then one rank's parameters are modified: "
        "its param_checksum departs from its replicas'"
    )
    rank: int | None = None
    culprit: int = field(init=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._need_replicas()
        self.culprit = self._rank(self.rank)

    def after_load(self, sim: JobSimulator) -> None:
        """Tamper with the culprit's weights right after the load."""
        if not self._done and sim.t >= self.at:
            sim.knobs.lineage[self.culprit] += "|tampered"
            self._done = True

    def expected(self) -> Expectation:
        """param_divergence on the culprit from the first step after the load."""
        return self._blame({"param_divergence"}, [self.culprit], "hard", self.load_tick + 1)


@dataclass(kw_only=True)
class OptimizerTamper(Scenario):
    """The learning rate is changed on a few ranks: their lr and then their weights differ."""

    name: ClassVar[str] = "optimizer_tamper"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "lr multiplied by lr_factor on n_ranks ranks: they report another lr and their "
        "parameters diverge from that step on"
    )
    n_ranks: int = 2
    lr_factor: float = 1.5
    ranks: tuple[int, ...] | None = None
    culprits: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.lr_factor) and self.lr_factor > 0 and self.lr_factor != 1):
            raise ValueError(f"{self.name}: lr_factor must be > 0 and != 1, got {self.lr_factor}")
        spec = self.spec
        want = self.n_ranks if self.ranks is None else len(set(self.ranks))
        if want < 1:
            raise ValueError(f"{self.name}: n_ranks must be >= 1, got {want}")
        if self.ranks is not None:
            order = sorted({self._rank(r) for r in self.ranks})
        else:
            order = list(range(spec.world_size))
            self._rng.shuffle(order)
        # Spread over replica groups so that every group's honest ranks stay a majority.
        taken: dict[tuple[int, int], int] = {}
        chosen: list[int] = []
        for r in order:
            group = spec.coords(r)[1:]
            if len(chosen) < want and 2 * (taken.get(group, 0) + 1) < spec.dp_size:
                chosen.append(r)
                taken[group] = taken.get(group, 0) + 1
        if len(chosen) < want:
            raise ValueError(
                f"{self.name}: {want} tampered ranks must be a minority of every replica "
                f"group ({spec.dp_size} replicas each)"
            )
        chosen.sort()
        self.culprits = tuple(chosen)

    def start(self, sim: JobSimulator) -> None:
        """Scale the culprits' lr; their next update makes their weights differ."""
        for r in self.culprits:
            sim.knobs.lr_factor[r] = self.lr_factor
            sim.knobs.lineage[r] += f"|lr*{self.lr_factor}"

    def expected(self) -> Expectation:
        """lr_mismatch and param_divergence on the tampered ranks."""
        return self._blame({"lr_mismatch", "param_divergence"}, list(self.culprits), "hard",
                           self.at)


@dataclass(kw_only=True)
class GradientCorruption(Scenario):
    """One rank's local gradient is scaled (or noised) before the all-reduce."""

    name: ClassVar[str] = "gradient_corruption"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "one rank's local gradient scaled by `scale` (mode=scale) or inflated by random noise "
        "of that size (mode=noise): its local_grad_norm departs from its peers'; the "
        "all-reduced grad_norm rises equally on every rank"
    )
    scale: float = 4.0
    mode: Literal["scale", "noise"] = "scale"
    rank: int | None = None
    culprit: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("scale", "noise"):
            raise ValueError(f"{self.name}: unknown mode {self.mode!r}; expected scale or noise")
        if not (math.isfinite(self.scale) and self.scale > 0 and self.scale != 1):
            raise ValueError(f"{self.name}: scale must be > 0 and != 1, got {self.scale}")
        self.culprit = self._rank(self.rank)

    def during(self, sim: JobSimulator, dt: int) -> None:
        """Corrupt the culprit's gradient of this tick."""
        if self.mode == "scale":
            factor = self.scale
        else:
            factor = 1.0 + self.scale * (0.5 + abs(self._rng.gauss(0.0, 1.0)))
        sim.knobs.grad_scale[self.culprit] = factor

    def expected(self) -> Expectation:
        """local_grad_outlier on the culprit."""
        return self._blame({"local_grad_outlier"}, [self.culprit], "hard", self.at)


@dataclass(kw_only=True)
class RngChange(Scenario):
    """One rank silently switches to other seeds: data order and dropout no longer agree."""

    name: ClassVar[str] = "rng_change"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "one rank's seeds change mid-run: its seed_fingerprint and its loss noise change"
    )
    rank: int | None = None
    culprit: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.culprit = self._rank(self.rank)

    def start(self, sim: JobSimulator) -> None:
        """Reseed the culprit."""
        salt = f"changed|{self.seed}|{self.culprit}"
        sim.knobs.seed_fingerprint[self.culprit] = digest(f"seeds|{salt}", 16)
        sim.reseed_rank(self.culprit, salt)

    def expected(self) -> Expectation:
        """seed_mismatch on the culprit."""
        return self._blame({"seed_mismatch"}, [self.culprit], "hard", self.at)


@dataclass(kw_only=True)
class PoisonedData(Scenario):
    """One rank's micro-batches are poisoned: its loss creeps above its peers'."""

    name: ClassVar[str] = "poisoned_data"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "one rank's loss rises by loss_increase (relative) over ramp_s ticks"
    )
    loss_increase: float = 0.08
    ramp_s: int = 60
    rank: int | None = None
    culprit: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.loss_increase) and self.loss_increase > 0):
            raise ValueError(f"{self.name}: loss_increase must be > 0, got {self.loss_increase}")
        if self.ramp_s < 0:
            raise ValueError(f"{self.name}: ramp_s must be >= 0, got {self.ramp_s}")
        self.culprit = self._rank(self.rank)

    def during(self, sim: JobSimulator, dt: int) -> None:
        """Raise the culprit's loss a little more."""
        sim.knobs.loss_bias[self.culprit] = self.loss_increase * ramp(dt, self.ramp_s)

    def expected(self) -> Expectation:
        """loss_outlier on the culprit."""
        return self._blame({"loss_outlier"}, [self.culprit], "subtle", self.at)


@dataclass(kw_only=True)
class CodeInjection(Scenario):
    """One rank starts running different code: its environment fingerprint changes."""

    name: ClassVar[str] = "code_injection"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = "one rank's env_fingerprint changes mid-run"
    rank: int | None = None
    culprit: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.culprit = self._rank(self.rank)

    def start(self, sim: JobSimulator) -> None:
        """Swap the culprit's code."""
        salt = f"injected|{self.seed}|{self.culprit}"
        sim.knobs.env_fingerprint[self.culprit] = digest(f"env|{salt}", 16)

    def expected(self) -> Expectation:
        """code_fingerprint on the culprit."""
        return self._blame({"code_fingerprint"}, [self.culprit], "hard", self.at)


@dataclass(kw_only=True)
class CheckpointCorruption(RestartScenario):
    """One rank's shard of the last checkpoint is modified on disk; a restart loads it."""

    name: ClassVar[str] = "checkpoint_corruption"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "one rank's shard of the last checkpoint modified on disk, then a restart: its load "
        "digest differs from its save digest (touch_params: it also loads other weights)"
    )
    rank: int | None = None
    touch_params: bool = True
    culprit: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.touch_params:
            self._need_replicas()
        self.culprit = self._rank(self.rank)

    def start(self, sim: JobSimulator) -> None:
        """Corrupt the shard, then restart."""
        sim.corrupt_shard(self.culprit, touch_params=self.touch_params)
        super().start(sim)

    def expected(self) -> Expectation:
        """checkpoint_digest (and param_divergence if the weights changed) on the culprit."""
        checks: set[CheckName] = {"checkpoint_digest"}
        if self.touch_params:
            checks.add("param_divergence")
        return self._blame(checks, [self.culprit], "hard", self.load_tick)
