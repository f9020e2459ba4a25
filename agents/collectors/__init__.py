"""Collectors: one per source of node telemetry, each returning ``schemas`` objects."""

from trainguard.agents.collectors.base import GpuCollector
from trainguard.agents.collectors.simulated import FAULT_MODES, SimulatedGpus

__all__ = ["FAULT_MODES", "GpuCollector", "SimulatedGpus"]
