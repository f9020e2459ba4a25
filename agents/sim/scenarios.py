"""The scenario library: every named scenario, and how to make one by name.

>>> spec = JobSpec(nodes=2, gpus_per_node=4)
>>> s = make_scenario("weight_tamper", spec, seed=3)
>>> s.expected().checks
frozenset({'param_divergence'})
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, Literal

from trainguard.agents.sim.availability import Kill, NodeSlowdown
from trainguard.agents.sim.benign import (
    CheckpointPause,
    CleanMix,
    CleanRestart,
    EvalPhase,
    JobResize,
    LrSchedule,
    NoisySteps,
    ThermalThrottle,
)
from trainguard.agents.sim.jobwide import JobLrChange, JobPoison, JobSlowdown
from trainguard.agents.sim.restarts import JobCodeChange, JobLrRestart, JobReseedRestart
from trainguard.agents.sim.sabotage import (
    CheckpointCorruption,
    CodeInjection,
    GradientCorruption,
    OptimizerTamper,
    PoisonedData,
    RngChange,
    WeightTamper,
)
from trainguard.agents.sim.scenario import Expectation, RestartScenario, Scenario
from trainguard.agents.sim.spec import JobSpec

__all__ = [
    "DEFAULT_SCENARIO",
    "SCENARIOS",
    "Expectation",
    "RestartScenario",
    "Scenario",
    "list_scenarios",
    "make_scenario",
    "scenario_params",
]

#: The sabotage ``trainguard demo`` injects unless told otherwise: one rank's weights
#: modified after a checkpoint load, as in the incident this project was built for.
DEFAULT_SCENARIO = "weight_tamper"

#: Every scenario class by name: sabotage first, then benign.
SCENARIOS: Final[dict[str, type[Scenario]]] = {
    cls.name: cls
    for cls in (
        WeightTamper, OptimizerTamper, GradientCorruption, Kill, RngChange, NodeSlowdown,
        PoisonedData, CodeInjection, CheckpointCorruption,
        JobCodeChange, JobLrRestart, JobReseedRestart,
        JobLrChange, JobPoison, JobSlowdown,
        CheckpointPause, LrSchedule, EvalPhase, CleanRestart, ThermalThrottle, JobResize,
        NoisySteps, CleanMix,
    )
}

_NOT_PARAMS = frozenset({"spec", "seed", "start_ts"})


def list_scenarios(kind: Literal["sabotage", "benign"] | None = None) -> list[str]:
    """Scenario names (of one ``kind`` if given), sabotage first."""
    return [name for name, cls in SCENARIOS.items() if kind is None or cls.kind == kind]


def scenario_params(name: str) -> dict[str, Any]:
    """The parameters scenario ``name`` takes, with their defaults."""
    cls = _lookup(name)
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.init and f.name not in _NOT_PARAMS
    }


def make_scenario(name: str, spec: JobSpec, seed: int = 0, **params: Any) -> Scenario:
    """Scenario ``name`` for jobs of ``spec``; culprits not given are drawn from ``seed``."""
    cls = _lookup(name)
    allowed = scenario_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for scenario {name!r}; "
            f"expected: {', '.join(allowed)}"
        )
    return cls(spec=spec, seed=seed, **params)


def _lookup(name: str) -> type[Scenario]:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; expected one of: {', '.join(SCENARIOS)}"
        ) from None
