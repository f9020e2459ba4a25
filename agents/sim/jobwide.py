"""Job-wide sabotage: every rank changed alike, so no rank departs from its peers.

What an insider who controls the shared training code or the job's config does most
naturally: raise the learning rate everywhere, poison every rank's data, slow the whole job.
Replicas still agree (their lineage changes alike), so only the job against its own recent
past (``job_shift``) can see it. Each blames the job (:meth:`Scenario._blame_job`): a
finding naming no rank and no node is the detection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from trainguard.agents.sim.scenario import Expectation, Scenario, ramp

if TYPE_CHECKING:
    from trainguard.agents.sim.job import JobSimulator

__all__ = ["JobLrChange", "JobPoison", "JobSlowdown"]

_Kind = Literal["sabotage", "benign"]


def _check_ramp(scenario: Scenario, ramp_s: int) -> None:
    if ramp_s < 0:
        raise ValueError(f"{scenario.name}: ramp_s must be >= 0, got {ramp_s}")


@dataclass(kw_only=True)
class JobLrChange(Scenario):
    """Every rank's learning rate multiplied by ``lr_factor`` at ``at``, without a restart.

    The loss responds a little: a learning rate off its tuned value costs some loss, so
    every rank's loss rises by ``loss_response × |ln lr_factor|`` (×3: +1.1 %, ×0.5:
    +0.7 % with the default 0.01), reached linearly over ``response_s`` ticks. The lr
    itself jumps on the step ``at``: that is what the check sees first.
    """

    name: ClassVar[str] = "job_lr_change"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "every rank's lr multiplied by lr_factor at `at` (replicas still agree); the loss "
        "rises by loss_response x |ln lr_factor| over response_s ticks"
    )
    lr_factor: float = 3.0
    loss_response: float = 0.01
    response_s: int = 60

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.lr_factor) and self.lr_factor > 0 and self.lr_factor != 1):
            raise ValueError(f"{self.name}: lr_factor must be > 0 and != 1, got {self.lr_factor}")
        if not (math.isfinite(self.loss_response) and self.loss_response >= 0):
            raise ValueError(f"{self.name}: loss_response must be >= 0, got {self.loss_response}")
        _check_ramp(self, self.response_s)

    def start(self, sim: JobSimulator) -> None:
        """Scale every rank's lr; their lineages change alike, so replicas still agree."""
        knobs = sim.knobs
        for r in range(len(knobs.lr_factor)):
            knobs.lr_factor[r] *= self.lr_factor
            knobs.lineage[r] += f"|job-lr*{self.lr_factor}"

    def during(self, sim: JobSimulator, dt: int) -> None:
        """The loss's small response, ramping in."""
        bias = self.loss_response * abs(math.log(self.lr_factor)) * ramp(dt, self.response_s)
        sim.knobs.loss_bias[:] = [bias] * len(sim.knobs.loss_bias)

    def expected(self) -> Expectation:
        """job_shift naming the job (its lr series jumped)."""
        return self._blame_job({"job_shift"}, "subtle", self.at)


@dataclass(kw_only=True)
class JobPoison(Scenario):
    """Every rank's data poisoned alike: the job's loss rises by ``loss_increase``."""

    name: ClassVar[str] = "job_poison"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "every rank's loss rises by loss_increase (relative) over ramp_s ticks, alike"
    )
    loss_increase: float = 0.05
    ramp_s: int = 60

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.loss_increase) and self.loss_increase > 0):
            raise ValueError(f"{self.name}: loss_increase must be > 0, got {self.loss_increase}")
        _check_ramp(self, self.ramp_s)

    def during(self, sim: JobSimulator, dt: int) -> None:
        """Raise every rank's loss a little more."""
        bias = self.loss_increase * ramp(dt, self.ramp_s)
        sim.knobs.loss_bias[:] = [bias] * len(sim.knobs.loss_bias)

    def expected(self) -> Expectation:
        """job_shift naming the job (its median loss rose)."""
        return self._blame_job({"job_shift"}, "subtle", self.at)


@dataclass(kw_only=True)
class JobSlowdown(Scenario):
    """Every rank's compute slowed alike (a throttled job, a worse kernel, a smaller batch)."""

    name: ClassVar[str] = "job_slowdown"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "every rank's compute time multiplied by `factor` from `at` on, alike (no GPU "
        "reports a slowdown)"
    )
    factor: float = 1.15

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.factor) and self.factor > 1):
            raise ValueError(f"{self.name}: factor must be > 1, got {self.factor}")

    def start(self, sim: JobSimulator) -> None:
        """Slow every rank."""
        knobs = sim.knobs
        knobs.compute_factor[:] = [f * self.factor for f in knobs.compute_factor]

    def expected(self) -> Expectation:
        """job_shift (availability) naming the job (its pace and tokens/s moved)."""
        return self._blame_job({"job_shift"}, "subtle", self.at)
