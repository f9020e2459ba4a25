"""Job-wide sabotage at a restart: the whole job resumes into something it was not before.

A saboteur who controls the shared training code or the job's config need not touch one
rank: they change it for every rank and let the job restart into it. Every rank then
agrees with every other, so no peer comparison can see it; only the job's own record from
before the restart can (``code_changed``, ``restart_divergence``). Each scenario here
restarts the job from its last checkpoint at tick ``at`` and changes every rank alike
right after the load; its ground truth is job-wide (:meth:`Scenario._blame_job`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from trainguard.agents.sim.scenario import Expectation, RestartScenario
from trainguard.agents.sim.state import digest

if TYPE_CHECKING:
    from trainguard.agents.sim.job import JobSimulator

__all__ = ["JobCodeChange", "JobLrRestart", "JobReseedRestart"]

_Kind = Literal["sabotage", "benign"]


@dataclass(kw_only=True)
class _AfterLoad(RestartScenario):
    """A restart whose change is applied once, to every rank, right after the load."""

    _done: bool = field(default=False, init=False, repr=False)

    def after_load(self, sim: JobSimulator) -> None:
        """Apply the change after the restart's load (not after an earlier one)."""
        if not self._done and sim.t >= self.at:
            self._done = True
            self.change(sim)

    def change(self, sim: JobSimulator) -> None:
        """What every rank comes back with."""


@dataclass(kw_only=True)
class JobCodeChange(_AfterLoad):
    """Every rank restarts into other code: the job's env fingerprint changes at the resume."""

    name: ClassVar[str] = "job_code_change"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "restart from the last checkpoint, every rank resumes with a new env_fingerprint "
        "(the shared code changed for the whole job)"
    )

    def change(self, sim: JobSimulator) -> None:
        """Give every rank the same new fingerprint."""
        new = digest(f"env|changed-at-restart|{self.spec.job_id}|{self.seed}", 16)
        sim.knobs.env_fingerprint = [new] * len(sim.knobs.env_fingerprint)

    def expected(self) -> Expectation:
        """code_changed on the job from the first step after the load."""
        return self._blame_job({"code_changed"}, "hard", self.load_tick + 1)


@dataclass(kw_only=True)
class JobLrRestart(_AfterLoad):
    """Every rank resumes with its learning rate scaled: replayed steps show another lr."""

    name: ClassVar[str] = "job_lr_restart"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "restart from the last checkpoint, every rank's lr multiplied by lr_factor from the "
        "resume on (alike on all ranks, so replicas still agree)"
    )
    lr_factor: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.lr_factor) and self.lr_factor > 0 and self.lr_factor != 1):
            raise ValueError(f"{self.name}: lr_factor must be > 0 and != 1, got {self.lr_factor}")

    def change(self, sim: JobSimulator) -> None:
        """Scale every rank's lr; their weights change alike (same lineage everywhere)."""
        knobs = sim.knobs
        for r in range(len(knobs.lr_factor)):
            knobs.lr_factor[r] = self.lr_factor
            knobs.lineage[r] += f"|lr*{self.lr_factor}"

    def expected(self) -> Expectation:
        """restart_divergence (lr at replayed steps) on the job."""
        return self._blame_job({"restart_divergence"}, "hard", self.load_tick + 1)


@dataclass(kw_only=True)
class JobReseedRestart(_AfterLoad):
    """Every rank resumes with other seeds: data order and dropout differ from the run's."""

    name: ClassVar[str] = "job_reseed_restart"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "restart from the last checkpoint, every rank resumes with the same new "
        "seed_fingerprint (and new random streams) within the same data epoch"
    )

    def change(self, sim: JobSimulator) -> None:
        """Reseed every rank alike."""
        salt = f"reseeded-at-restart|{self.seed}"
        new = digest(f"seeds|{salt}", 16)
        knobs = sim.knobs
        knobs.seed_fingerprint = [new] * len(knobs.seed_fingerprint)
        for r in range(len(knobs.seed_fingerprint)):
            sim.reseed_rank(r, salt)

    def expected(self) -> Expectation:
        """restart_divergence (seed fingerprint) on the job."""
        return self._blame_job({"restart_divergence"}, "hard", self.load_tick + 1)
