"""GPU readings of one simulated node, driven by what each GPU's rank is doing.

The numbers follow :mod:`trainguard.agents.collectors.simulated` (an H100 80GB: 700 W limit,
1980 MHz SM clock): power, temperature and traffic follow utilization, an idle GPU drops
to its idle clock and reports the idle clock-event reason. A :class:`GpuOverride` lets a
scenario lower a GPU's clock, heat it up or set clock-event reasons.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Literal

from trainguard.agents.collectors.simulated import h100_sample
from trainguard.schemas.records import GpuSample

__all__ = [
    "REASON_APPLICATIONS_CLOCKS",
    "REASON_GPU_IDLE",
    "REASON_HW_SLOWDOWN",
    "REASON_HW_THERMAL",
    "REASON_SW_POWER_CAP",
    "REASON_SW_THERMAL",
    "SM_CLOCK_MAX_MHZ",
    "Activity",
    "GpuOverride",
    "NodeGpus",
]

# NVML clock-event reason bits (nvmlClocksEventReason*).
REASON_GPU_IDLE: Final = 0x1
REASON_APPLICATIONS_CLOCKS: Final = 0x2
REASON_SW_POWER_CAP: Final = 0x4
REASON_HW_SLOWDOWN: Final = 0x8
REASON_SW_THERMAL: Final = 0x20
REASON_HW_THERMAL: Final = 0x40

SM_CLOCK_MAX_MHZ: Final = 1980
_SM_CLOCK_IDLE = 345
_POWER_LIMIT_W = 700.0

#: What a GPU's rank is doing this tick. ``busy``: training steps; ``eval``: evaluation
#: (moderate load); ``spin``: blocked in a collective whose peer is gone (NCCL kernels
#: spin, so utilization reads high at low power); ``wait``: the process holds the GPU but
#: computes nothing (checkpoint write, load); ``free``: no training process on the GPU.
Activity = Literal["busy", "eval", "spin", "wait", "free"]

# (mean util %, sd, power per util, memory fraction, compute processes) per activity.
_PROFILE: Final[dict[str, tuple[float, float, float, float, int]]] = {
    "busy": (96.0, 2.0, 0.8, 0.82, 1),
    "eval": (58.0, 5.0, 0.8, 0.82, 1),
    "spin": (99.0, 0.5, 0.3, 0.82, 1),
    "wait": (3.0, 2.0, 0.8, 0.80, 1),
    "free": (0.0, 0.5, 0.8, 0.006, 0),
}


@dataclass(frozen=True)
class GpuOverride:
    """A scenario's change to one GPU's readings: a clock cap, extra reasons, a temperature."""

    sm_clock_mhz: int | None = None
    reasons: int = 0
    temp_c: float | None = None
    #: The GPU fell off the bus: NVML reports it lost (XID 79), no readings.
    lost: bool = False


class NodeGpus:
    """The GPUs of one node; deterministic for a given ``seed``."""

    def __init__(self, node: str, count: int, *, seed: int) -> None:
        self.node = node
        self.count = count
        self._rng = random.Random(f"gpus:{node}:{seed}")
        self._uuids = [f"GPU-sim-{node}-{i:02d}" for i in range(count)]
        self._nvlink = [0] * count

    def sample(
        self, activities: list[Activity], overrides: dict[int, GpuOverride]
    ) -> list[GpuSample]:
        """One reading per GPU, GPU ``i`` doing ``activities[i]``."""
        return [self._one(i, activities[i], overrides.get(i)) for i in range(self.count)]

    def _one(self, i: int, activity: Activity, override: GpuOverride | None) -> GpuSample:
        gauss = self._rng.gauss
        mean, sd, power_per_util, mem_fraction, procs = _PROFILE[activity]
        util = min(100.0, max(0.0, gauss(mean, sd)))
        idle = activity in ("wait", "free")
        clock = _SM_CLOCK_IDLE if idle else SM_CLOCK_MAX_MHZ
        reasons = REASON_GPU_IDLE if idle else 0
        temp_target: float | None = None
        if override is not None:
            if override.sm_clock_mhz is not None:
                clock = min(clock, override.sm_clock_mhz)
            reasons |= override.reasons
            temp_target = override.temp_c
        # Dynamic power falls roughly with the clock at a fixed voltage.
        clock_ratio = 1.0 if idle else clock / SM_CLOCK_MAX_MHZ
        power = _POWER_LIMIT_W * (0.12 + power_per_util * clock_ratio * util / 100.0)
        power += gauss(0.0, 8.0)
        temp = 38.0 + 0.4 * util * clock_ratio + gauss(0.0, 0.7)
        if temp_target is not None:
            temp = temp_target + gauss(0.0, 0.8)
        self._nvlink[i] += int(util * 1.9e8) if activity in ("busy", "eval") else 0
        if override is not None and override.lost:
            # Drawn above all the same, so the other GPUs' readings do not change.
            return GpuSample(index=i, uuid=self._uuids[i], lost=True)
        return h100_sample(
            i, self._uuids[i], util=util, power=power, temp=temp, sm_clock=clock,
            reasons=reasons, mem_fraction=mem_fraction, nvlink=self._nvlink[i], procs=procs,
        )
