"""Sabotage of a run's availability: a node's ranks killed, a node silently slowed.

Like :mod:`trainguard.agents.sim.sabotage`, each names the checks that must fire and whom they must
blame; here the culprit is a node (and its ranks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from trainguard.agents.sim.gpus import REASON_APPLICATIONS_CLOCKS, SM_CLOCK_MAX_MHZ, GpuOverride
from trainguard.agents.sim.scenario import Expectation, Scenario, ramp

if TYPE_CHECKING:
    from trainguard.agents.sim.job import JobSimulator

__all__ = ["Kill", "NodeSlowdown"]

_Kind = Literal["sabotage", "benign"]


@dataclass(kw_only=True)
class Kill(Scenario):
    """Every training process of one node is killed; the node's GPUs fall idle."""

    name: ClassVar[str] = "kill"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "the ranks of one node are killed and stop reporting; their peers keep stepping for "
        "peers_continue_s ticks, then hang in a collective (None: they never hang)"
    )
    node: int | None = None
    peers_continue_s: int | None = 30
    #: Kill only this many of the node's ranks (its first GPUs); None: all of them.
    ranks: int | None = None
    #: Their GPUs fall off the bus (NVML: GPU is lost) instead of the processes exiting.
    gpu_lost: bool = False
    culprit_node: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._need_nodes()
        if self.peers_continue_s is not None and self.peers_continue_s < 1:
            raise ValueError(
                f"{self.name}: peers_continue_s must be >= 1 or None, got {self.peers_continue_s}"
            )
        self.culprit_node = self._node(self.node)
        if self.ranks is not None and not 1 <= self.ranks <= self.spec.gpus_per_node:
            raise ValueError(f"{self.name}: ranks must be within 1..{self.spec.gpus_per_node} "
                             f"(the node's GPUs) or None, got {self.ranks}")

    def _killed(self) -> list[int]:
        return self._node_ranks(self.culprit_node)[:self.ranks]

    def start(self, sim: JobSimulator) -> None:
        """Kill the node's ranks."""
        g = self.spec.gpus_per_node
        for r in self._killed():
            sim.knobs.alive[r] = False
            if self.gpu_lost:
                sim.knobs.gpu[(self.culprit_node, r % g)] = GpuOverride(lost=True)

    def during(self, sim: JobSimulator, dt: int) -> None:
        """Let the peers hang once they need the dead ranks."""
        if self.peers_continue_s is not None and dt == self.peers_continue_s:
            sim.knobs.hung = True

    def expected(self) -> Expectation:
        """rank_missing on the node's ranks (node_idle on the node is no false alarm)."""
        return self._blame({"rank_missing"}, self._killed(), "hard",
                           self.at, tolerated=frozenset({"node_idle"}))


@dataclass(kw_only=True)
class NodeSlowdown(Scenario):
    """One node's GPUs are silently held at a lower application clock."""

    name: ClassVar[str] = "node_slowdown"
    kind: ClassVar[_Kind] = "sabotage"
    description: ClassVar[str] = (
        "one node's SM clock lowered through application clocks (reason 0x2, no thermal "
        "bits): its ranks' compute time rises by `factor` over ramp_s ticks"
    )
    node: int | None = None
    factor: float = 1.25
    ramp_s: int = 30
    culprit_node: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._need_nodes()
        if not (math.isfinite(self.factor) and self.factor > 1):
            raise ValueError(f"{self.name}: factor must be > 1, got {self.factor}")
        if self.ramp_s < 0:
            raise ValueError(f"{self.name}: ramp_s must be >= 0, got {self.ramp_s}")
        self.culprit_node = self._node(self.node)

    def during(self, sim: JobSimulator, dt: int) -> None:
        """Lower the node's clocks a little more, up to ``factor``."""
        f = 1.0 + (self.factor - 1.0) * ramp(dt, self.ramp_s)
        slow = GpuOverride(sm_clock_mhz=int(SM_CLOCK_MAX_MHZ / f),
                           reasons=REASON_APPLICATIONS_CLOCKS)
        for r in self._node_ranks(self.culprit_node):
            sim.knobs.compute_factor[r] = f
        for j in range(self.spec.gpus_per_node):
            sim.knobs.gpu[(self.culprit_node, j)] = slow

    def expected(self) -> Expectation:
        """A straggler finding on the node (and its ranks)."""
        return self._blame({"straggler"}, self._node_ranks(self.culprit_node), "subtle", self.at)
