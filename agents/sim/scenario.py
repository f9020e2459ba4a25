"""The scenario contract: a named, seeded change to a simulated job, with its ground truth.

A scenario is made for one :class:`JobSpec` and drives one :class:`JobSimulator`. The
simulator calls its hooks: :meth:`Scenario.adapt` once (to change the job's schedule,
never its shape), :meth:`Scenario.on_tick` before every tick (by default :meth:`start`
once at tick ``at`` and :meth:`during` on every tick from ``at`` on) and
:meth:`Scenario.after_load` after every checkpoint load. Culprits are drawn from the
scenario's seed, so different seeds blame different ranks and nodes.

:meth:`Scenario.expected` is the ground truth the consistency checks are scored against:
for sabotage, which checks must fire and whom they must blame; for a benign scenario,
no check at all (``checks`` is empty).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Literal

from trainguard.agents.sim.spec import DEFAULT_START_TS, JobSpec
from trainguard.schemas.records import CheckName

if TYPE_CHECKING:
    from trainguard.agents.sim.job import JobSimulator

__all__ = ["Expectation", "RestartScenario", "Scenario", "ramp"]

def ramp(dt: int, ramp_s: int) -> float:
    """Fraction of a change reached ``dt`` ticks into a ``ramp_s``-tick ramp (0: at once)."""
    return 1.0 if ramp_s <= 0 else min(1.0, (dt + 1) / ramp_s)


@dataclass(frozen=True)
class Expectation:
    """What the consistency checks should make of a scenario."""

    #: Integrity or availability checks that must fire (empty: none may fire).
    checks: frozenset[CheckName]
    #: Whom they must blame (for a benign scenario: whom ``hardware_checks`` blame).
    culprit_ranks: frozenset[int]
    culprit_nodes: frozenset[str]
    severity: Literal["hard", "subtle"] | None
    #: Event time from which the fault is in effect. The first record showing it can come
    #: later while the job is not stepping (a checkpoint pause, an eval phase).
    starts_at_ts: float
    #: Checks that should fire and be classified as hardware (category ``hardware``).
    hardware_checks: frozenset[CheckName] = frozenset()
    #: Checks that may also fire, blaming the same culprits, without being false alarms
    #: (a killed node's GPUs fall idle: ``node_idle`` may fire beside ``rank_missing``).
    tolerated: frozenset[CheckName] = frozenset()
    #: The fault is the whole job's (every rank changed alike): a finding of an expected
    #: check is a detection whether it names every rank or none (a job-wide finding).
    job_wide: bool = False


@dataclass(kw_only=True)
class Scenario:
    """Base of every scenario: spec, seed, start tick and the hooks the simulator calls."""

    name: ClassVar[str] = "scenario"
    kind: ClassVar[Literal["sabotage", "benign"]] = "benign"
    description: ClassVar[str] = ""

    spec: JobSpec
    seed: int = 0
    #: The tick the scenario starts acting.
    at: int = 150
    #: Event time of tick 0; set from the simulator the scenario drives.
    start_ts: float = DEFAULT_START_TS
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _bound: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.at < 1:
            raise ValueError(f"{self.name}: at must be >= 1 (a tick), got {self.at}")
        self._rng = random.Random(f"scenario:{self.name}:{self.seed}")

    # -- hooks -------------------------------------------------------------------------

    def adapt(self, spec: JobSpec) -> JobSpec:
        """The spec the job runs with: ``spec`` with this scenario's schedule changes."""
        return spec

    def bind(self, sim: JobSimulator) -> None:
        """Called once by the simulator this scenario drives (a scenario drives one only)."""
        if self._bound:
            raise RuntimeError(
                f"scenario {self.name!r} already drives a simulator; make a new one"
            )
        self._bound = True
        self.start_ts = sim.start_ts

    def on_tick(self, sim: JobSimulator, t: int) -> None:
        """Called before tick ``t`` is simulated."""
        if t == self.at:
            self.start(sim)
        if t >= self.at:
            self.during(sim, t - self.at)

    def start(self, sim: JobSimulator) -> None:
        """Act once, at tick ``at``."""

    def during(self, sim: JobSimulator, dt: int) -> None:
        """Act on every tick from ``at`` on; ``dt`` ticks after ``at``."""

    def after_load(self, sim: JobSimulator) -> None:
        """Act after the ranks loaded a checkpoint (or restarted without one)."""

    def expected(self) -> Expectation:
        """The ground truth for the consistency checks."""
        return Expectation(frozenset(), frozenset(), frozenset(), None, self.ts_of(self.at))

    # -- helpers for subclasses --------------------------------------------------------

    def ts_of(self, tick: int) -> float:
        """Event time of ``tick``."""
        return self.start_ts + tick

    def _rank(self, rank: int | None) -> int:
        """``rank`` checked against the job, or one drawn from the seed."""
        world = self.spec.world_size
        if rank is None:
            return self._rng.randrange(world)
        if not 0 <= rank < world:
            raise ValueError(f"{self.name}: rank {rank} out of range 0..{world - 1}")
        return rank

    def _node(self, node: int | None) -> int:
        """Node index ``node`` checked against the job, or one drawn from the seed."""
        if node is None:
            return self._rng.randrange(self.spec.nodes)
        if not 0 <= node < self.spec.nodes:
            raise ValueError(f"{self.name}: node {node} out of range 0..{self.spec.nodes - 1}")
        return node

    def _node_ranks(self, node: int) -> list[int]:
        g = self.spec.gpus_per_node
        return list(range(node * g, (node + 1) * g))

    def _blame(
        self,
        checks: set[CheckName],
        ranks: list[int],
        severity: Literal["hard", "subtle"] | None,
        starts_at_tick: int,
        *,
        hardware: frozenset[CheckName] = frozenset(),
        tolerated: frozenset[CheckName] = frozenset(),
        job_wide: bool = False,
    ) -> Expectation:
        g = self.spec.gpus_per_node
        return Expectation(
            checks=frozenset(checks),
            culprit_ranks=frozenset(ranks),
            culprit_nodes=frozenset(self.spec.node_name(r // g) for r in ranks),
            severity=severity,
            starts_at_ts=self.ts_of(starts_at_tick),
            hardware_checks=hardware,
            tolerated=tolerated,
            job_wide=job_wide,
        )

    def _blame_job(self, checks: set[CheckName], severity: Literal["hard", "subtle"] | None,
                   starts_at_tick: int) -> Expectation:
        """Ground truth of a job-wide fault: every rank and node is a culprit."""
        return self._blame(checks, list(range(self.spec.world_size)), severity,
                           starts_at_tick, job_wide=True)

    def _need_replicas(self, minimum: int = 3) -> None:
        if self.spec.dp_size < minimum:
            raise ValueError(
                f"{self.name}: needs >= {minimum} data-parallel replicas to single out a "
                f"culprit, the job has dp_size {self.spec.dp_size}"
            )

    def _need_nodes(self, minimum: int = 2) -> None:
        if self.spec.nodes < minimum:
            raise ValueError(
                f"{self.name}: needs >= {minimum} nodes, the job has {self.spec.nodes}"
            )


@dataclass(kw_only=True)
class RestartScenario(Scenario):
    """A scenario around a restart from the last checkpoint at tick ``at``."""

    #: Ticks every rank is down before loading.
    down_s: int = 15
    #: Checkpoint interval (steps) the job runs with at most, so one exists before ``at``.
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.down_s < 1:
            raise ValueError(f"{self.name}: down_s must be >= 1, got {self.down_s}")
        every = min(self.spec.checkpoint_every, self.checkpoint_every)
        if every < 1 or self.at < every + self.spec.checkpoint_pause_s:
            raise ValueError(
                f"{self.name}: at={self.at} comes before the first checkpoint completes "
                f"(checkpoint_every {every} + pause {self.spec.checkpoint_pause_s} ticks)"
            )

    def adapt(self, spec: JobSpec) -> JobSpec:
        """Checkpoint at least every ``checkpoint_every`` steps."""
        return replace(spec, checkpoint_every=min(spec.checkpoint_every, self.checkpoint_every))

    def start(self, sim: JobSimulator) -> None:
        """Take every rank down; they load the last checkpoint ``down_s`` ticks later."""
        sim.restart(self.down_s)

    @property
    def load_tick(self) -> int:
        """The tick at which the ranks load the checkpoint."""
        return self.at + self.down_s
