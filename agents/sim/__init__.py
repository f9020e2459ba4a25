"""A seeded training-job simulator in event time, with a library of sabotage and benign scenarios.

``JobSimulator(spec, scenario, seed=...)`` emits, tick by tick, what the node agents of a
training job would send (GPU sample batches, step batches, checkpoint events), faster
than real time and reproducibly; ``make_scenario(name, spec, seed)`` makes one of
:data:`SCENARIOS`, whose ``expected()`` is the ground truth for the consistency checks.
"""

from trainguard.agents.sim.gpus import GpuOverride
from trainguard.agents.sim.job import JobSimulator
from trainguard.agents.sim.scenarios import (
    DEFAULT_SCENARIO,
    SCENARIOS,
    Expectation,
    Scenario,
    list_scenarios,
    make_scenario,
    scenario_params,
)
from trainguard.agents.sim.spec import DEFAULT_START_TS, Emit, JobSpec
from trainguard.agents.sim.state import Checkpoint, Knobs

__all__ = [
    "DEFAULT_SCENARIO",
    "DEFAULT_START_TS",
    "SCENARIOS",
    "Checkpoint",
    "Emit",
    "Expectation",
    "GpuOverride",
    "JobSimulator",
    "JobSpec",
    "Knobs",
    "Scenario",
    "list_scenarios",
    "make_scenario",
    "scenario_params",
]
