"""A simulated GPU backend with the NVML collector's interface, for machines without GPUs.

Readings follow a training-like duty cycle (busy during steps, a dip at every
checkpoint) with seeded noise, so runs are reproducible. Faults can be injected per
GPU to exercise the detectors: ``idle``, ``throttled``, ``hot``, ``xid``, ``lost``.
"""

from __future__ import annotations

import random
from typing import Final

from trainguard.schemas.records import GpuSample, XidEvent

__all__ = ["FAULT_MODES", "SimulatedGpus", "h100_sample"]

FAULT_MODES: Final = ("idle", "throttled", "hot", "xid", "lost")

_MEM_TOTAL = 80 * 1024**3
_POWER_LIMIT_W = 700.0
_SM_CLOCK_MAX = 1980
_MEM_CLOCK = 2619
# NVML clock-event reason bits (nvmlClocksEventReason*), as the real driver reports them.
_REASON_GPU_IDLE = 0x1
_REASON_SW_POWER_CAP = 0x4
_REASON_SW_THERMAL = 0x20
_REASON_HW_SLOWDOWN = 0x8


class SimulatedGpus:
    """Simulated GPUs of one node; deterministic for a given ``seed``."""

    backend = "simulated"

    def __init__(
        self,
        node: str,
        gpu_count: int = 8,
        *,
        seed: int = 0,
        checkpoint_every_s: float = 600.0,
        checkpoint_pause_s: float = 20.0,
    ) -> None:
        if gpu_count < 1 or gpu_count > 256:
            raise ValueError(f"gpu_count must be within 1..256, got {gpu_count}")
        self._node = node
        self._count = gpu_count
        self._rng = random.Random(f"{node}:{seed}")
        self._checkpoint_every_s = checkpoint_every_s
        self._checkpoint_pause_s = checkpoint_pause_s
        self._faults: dict[int, str] = {}
        self._nvlink = [0] * gpu_count
        self._uuids = [f"GPU-sim-{node}-{i:02d}" for i in range(gpu_count)]

    @property
    def gpu_count(self) -> int:
        """Number of simulated GPUs."""
        return self._count

    @property
    def driver_version(self) -> str | None:
        """A fixed, obviously simulated driver version."""
        return "sim-550.0"

    def inject(self, gpu: int, mode: str | None) -> None:
        """Make ``gpu`` misbehave in ``mode`` (one of :data:`FAULT_MODES`), or heal it."""
        if not 0 <= gpu < self._count:
            raise ValueError(f"gpu index {gpu} out of range 0..{self._count - 1}")
        if mode is None:
            self._faults.pop(gpu, None)
        elif mode in FAULT_MODES:
            self._faults[gpu] = mode
        else:
            raise ValueError(
                f"unknown fault mode {mode!r}; expected one of: {', '.join(FAULT_MODES)}"
            )

    def collect(self, ts: float) -> list[GpuSample]:
        """One reading per GPU at event time ``ts``."""
        in_checkpoint = (ts % self._checkpoint_every_s) < self._checkpoint_pause_s
        return [self._one(i, ts, in_checkpoint) for i in range(self._count)]

    def close(self) -> None:
        """Nothing to release."""

    def _one(self, i: int, ts: float, in_checkpoint: bool) -> GpuSample:
        mode = self._faults.get(i)
        if mode == "lost":
            return GpuSample(index=i, uuid=self._uuids[i], lost=True)
        rng = self._rng
        busy = not in_checkpoint and mode != "idle"
        util = min(100.0, max(0.0, rng.gauss(96.0, 2.0))) if busy else max(0.0, rng.gauss(3.0, 2.0))
        power = _POWER_LIMIT_W * (0.12 + 0.8 * util / 100.0) + rng.gauss(0.0, 8.0)
        temp = 38.0 + 0.4 * util + rng.gauss(0.0, 0.7)
        sm_clock = _SM_CLOCK_MAX if busy else 345
        reasons = 0 if busy else _REASON_GPU_IDLE
        if mode == "throttled":
            sm_clock, power = 1005, min(power, 0.55 * _POWER_LIMIT_W)
            reasons |= _REASON_SW_POWER_CAP | _REASON_HW_SLOWDOWN
        elif mode == "hot":
            temp = 91.0 + rng.gauss(0.0, 0.8)
            reasons |= _REASON_SW_THERMAL
        xids = (
            [XidEvent(xid=79, ts=ts, detail="simulated: GPU has fallen off the bus")]
            if mode == "xid"
            else []
        )
        traffic = int(util * 1.9e8)
        self._nvlink[i] += traffic
        return h100_sample(
            i, self._uuids[i], util=util, power=power, temp=temp, sm_clock=sm_clock,
            reasons=reasons, mem_fraction=0.82 if busy else 0.80, nvlink=self._nvlink[i],
            xids=xids, procs=1,
        )


def h100_sample(
    index: int, uuid: str, *, util: float, power: float, temp: float, sm_clock: int,
    reasons: int, mem_fraction: float, nvlink: int, xids: list[XidEvent] | None = None,
    procs: int = 1,
) -> GpuSample:
    """A simulated H100's full reading from its few moving parts (shared by the simulators)."""
    return GpuSample(
        index=index,
        uuid=uuid,
        model="NVIDIA H100 80GB HBM3 (simulated)",
        util_gpu_pct=round(util, 2),
        util_mem_pct=round(util * 0.55, 2),
        mem_used_bytes=int(_MEM_TOTAL * mem_fraction),
        mem_total_bytes=_MEM_TOTAL,
        power_w=round(max(60.0, min(power, _POWER_LIMIT_W)), 1),
        power_limit_w=_POWER_LIMIT_W,
        temp_c=round(temp, 1),
        sm_clock_mhz=sm_clock,
        mem_clock_mhz=_MEM_CLOCK,
        clock_event_reasons=reasons,
        pcie_rx_bytes_s=float(int(util * 2.0e7)),
        pcie_tx_bytes_s=float(int(util * 1.5e7)),
        nvlink_rx_bytes=nvlink,
        nvlink_tx_bytes=nvlink,
        ecc_corrected=0,
        ecc_uncorrected=0,
        remapped_rows_correctable=0,
        remapped_rows_uncorrectable=0,
        remap_pending=False,
        remap_failed=False,
        xid_events=tuple(xids or ()),
        compute_procs=procs,
    )
