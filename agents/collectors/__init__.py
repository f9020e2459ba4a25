"""Collectors: one per source of node telemetry, each returning ``schemas`` objects."""

from agents.collectors.base import GpuCollector
from agents.collectors.simulated import FAULT_MODES, SimulatedGpus

__all__ = ["FAULT_MODES", "GpuCollector", "SimulatedGpus"]
