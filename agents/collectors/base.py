"""The contract every GPU collector (NVML, simulated) fulfils."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from trainguard.schemas.records import GpuSample

__all__ = ["GpuCollector"]


@runtime_checkable
class GpuCollector(Protocol):
    """Reads every GPU of one node at one tick."""

    #: ``"nvml"`` or ``"simulated"``, reported in heartbeats.
    backend: str

    @property
    def gpu_count(self) -> int:
        """How many GPUs this node has (lost ones included)."""
        ...

    @property
    def driver_version(self) -> str | None:
        """The driver version, where known."""
        ...

    def collect(self, ts: float) -> list[GpuSample]:
        """Read all GPUs; a GPU that cannot be read is reported, not raised."""
        ...

    def close(self) -> None:
        """Release the device library."""
        ...
