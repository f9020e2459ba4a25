"""A fake of the ``pynvml`` module for tests on machines without GPUs.

It exposes the functions and constants :class:`trainguard.agents.collectors.nvml.NvmlGpus` uses,
answers from a snapshot of an 8x H100 SXM5 node in the middle of training (values of
the kind ``nvidia-smi -q`` shows on such a node), and fails on demand. Wherever it can,
it reuses the real binding: the constants, the exception classes (``NVMLError(code)``
builds the same subclass pynvml raises), the ctypes result structures, and ctypes
pointers as device handles (so handle identity behaves as with the real library).
"""

from __future__ import annotations

import ctypes
import dataclasses
from types import ModuleType
from typing import Any

import pynvml

ALL_LINKS = 0xFFFFFFFF
NOT_MIG = 0xFFFFFFFF  # the instance ids NVML reports for a process outside MIG
MIB = 1024**2


@dataclasses.dataclass
class FakeGpu:
    """One GPU's readings, in NVML's own units (mW, KB/s, KiB, bytes)."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    util_gpu: int = 97
    util_mem: int = 45
    mem_total: int = 81559 * MIB  # 79.6 GiB usable of the 80 GB HBM3
    mem_used: int = 77737 * MIB
    power_mw: int = 612_417
    power_limit_mw: int = 700_000
    temp_c: int = 64
    sm_mhz: int = 1980
    mem_mhz: int = 2619
    clock_reasons: int = 0
    pcie_rx_kb: int = 412_334
    pcie_tx_kb: int = 187_520
    nvlink_links: int = 18
    #: Cumulative KiB per link since the driver loaded.
    nvlink_rx_kib: int = 4_126_377_201
    nvlink_tx_kib: int = 4_126_301_958
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)
    #: (pid, usedGpuMemory bytes or None)
    processes: list[tuple[int, int | None]] = dataclasses.field(default_factory=list)
    xid_supported: bool = True


def h100_node() -> list[FakeGpu]:
    """Eight busy H100s, one training rank each, with the small spread real GPUs show."""
    spread = [  # (util %, power mW, temp C)
        (97, 612_417, 64), (96, 604_118, 62), (98, 633_902, 66), (97, 618_045, 65),
        (97, 609_733, 63), (95, 597_260, 61), (98, 629_871, 67), (97, 615_390, 64),
    ]  # fmt: skip
    return [
        FakeGpu(
            uuid=f"GPU-8f3c{i:04x}-2b1e-4d9a-b7c6-5e0a1f2d3c{i:02x}",
            util_gpu=util,
            power_mw=power,
            temp_c=temp,
            processes=[(1_843_201 + i, 77_112 * MIB)],
        )
        for i, (util, power, temp) in enumerate(spread)
    ]


class FakeNvml(ModuleType):
    """A module-like fake of pynvml over a list of :class:`FakeGpu`.

    ``init_error`` makes ``nvmlInit`` fail with that NVML code. ``all_links_scope=False``
    models a driver that rejects the all-links NVLink scope. ``legacy=True`` models an
    older binding (no ``ClocksEventReasons``, no ``nvmlEventSetWait_v2``).
    """

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        driver_version: str = "550.90.07",
        init_error: int | None = None,
        all_links_scope: bool = True,
        legacy: bool = False,
    ) -> None:
        super().__init__("fake_pynvml")
        for name in dir(pynvml):
            if name.startswith(("NVML_", "NVMLError", "nvmlEventType")):
                setattr(self, name, getattr(pynvml, name))
        self.NVMLLibraryMismatchError = pynvml.NVMLLibraryMismatchError
        self.gpus = h100_node() if gpus is None else gpus
        self.driver_version = driver_version
        self.init_error = init_error
        self.all_links_scope = all_links_scope
        if legacy:
            self.nvmlDeviceGetCurrentClocksEventReasons = None
            self.nvmlEventSetWait_v2 = None
        # Real ctypes handles: NVML hands out pointers, and events carry new pointer objects.
        self._structs = [pynvml.struct_c_nvmlDevice_t() for _ in self.gpus]
        self._handles = [ctypes.pointer(s) for s in self._structs]
        self._failures: dict[tuple[int, str], int | BaseException] = {}
        self._registered: set[int] = set()
        self._events: list[tuple[int, int]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.initialized = False
        self.event_sets_freed = 0

    # -- test controls ----------------------------------------------------------------

    def fail(self, gpu: int, function: str, error: int | BaseException) -> None:
        """Make ``function`` (or every device call, ``"*"``) fail for ``gpu``."""
        self._failures[(gpu, function)] = error

    def lose(self, gpu: int) -> None:
        """The GPU falls off the bus: every call on it reports ``GPU_IS_LOST``."""
        self.fail(gpu, "*", pynvml.NVML_ERROR_GPU_IS_LOST)

    def queue_xid(self, gpu: int, xid: int) -> None:
        """The driver reports XID ``xid`` on ``gpu`` (delivered only if registered)."""
        if gpu in self._registered:
            self._events.append((gpu, xid))

    def device_calls(self, gpu: int) -> list[str]:
        """Names of the device calls made for ``gpu``."""
        return [c[0] for c in self.calls if len(c) > 1 and c[1] == gpu]

    # -- library ----------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append(("nvmlInit",))
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.calls.append(("nvmlShutdown",))
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._check(index, "nvmlDeviceGetHandleByIndex")
        return self._handles[index]

    # -- device readings --------------------------------------------------------------

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return self._dev(h, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, h: Any) -> str:
        return self._dev(h, "nvmlDeviceGetName").name

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        g = self._dev(h, "nvmlDeviceGetUtilizationRates")
        return pynvml.c_nvmlUtilization_t(gpu=g.util_gpu, memory=g.util_mem)

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        g = self._dev(h, "nvmlDeviceGetMemoryInfo")
        free = g.mem_total - g.mem_used
        return pynvml.c_nvmlMemory_t(total=g.mem_total, free=free, used=g.mem_used)

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        return self._dev(h, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:
        return self._dev(h, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._dev(h, "nvmlDeviceGetTemperature").temp_c

    def nvmlDeviceGetClockInfo(self, h: Any, clock: int) -> int:
        g = self._dev(h, "nvmlDeviceGetClockInfo")
        return {pynvml.NVML_CLOCK_SM: g.sm_mhz, pynvml.NVML_CLOCK_MEM: g.mem_mhz}[clock]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        return self._dev(h, "nvmlDeviceGetCurrentClocksEventReasons").clock_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: Any) -> int:
        return self._dev(h, "nvmlDeviceGetCurrentClocksThrottleReasons").clock_reasons

    def nvmlDeviceGetPcieThroughput(self, h: Any, counter: int) -> int:
        g = self._dev(h, "nvmlDeviceGetPcieThroughput")
        rx, tx = pynvml.NVML_PCIE_UTIL_RX_BYTES, pynvml.NVML_PCIE_UTIL_TX_BYTES
        return {rx: g.pcie_rx_kb, tx: g.pcie_tx_kb}[counter]

    def nvmlDeviceGetTotalEccErrors(self, h: Any, error_type: int, counter: int) -> int:
        g = self._dev(h, "nvmlDeviceGetTotalEccErrors")
        assert counter == pynvml.NVML_VOLATILE_ECC
        corrected = error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
        return g.ecc_corrected if corrected else g.ecc_uncorrected

    def nvmlDeviceGetRemappedRows(self, h: Any) -> tuple[int, int, int, int]:
        return self._dev(h, "nvmlDeviceGetRemappedRows").remapped

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        return self._procs(self._dev(h, "nvmlDeviceGetComputeRunningProcesses"))

    def nvmlDeviceGetComputeRunningProcesses_v2(self, h: Any) -> list[Any]:
        return self._procs(self._dev(h, "nvmlDeviceGetComputeRunningProcesses_v2"))

    def nvmlDeviceGetNvLinkState(self, h: Any, link: int) -> int:
        g = self._dev(h, "nvmlDeviceGetNvLinkState")
        if g.nvlink_links == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if link >= g.nvlink_links:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return pynvml.NVML_FEATURE_ENABLED

    def nvmlDeviceGetFieldValues(self, h: Any, field_ids: list[Any]) -> Any:
        """As pynvml: ``(fieldId, scopeId)`` tuples, or bare ids that leave scope 0."""
        g = self._dev(h, "nvmlDeviceGetFieldValues")
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for v, fid in zip(values, field_ids, strict=True):
            field_id, scope = fid if isinstance(fid, tuple) else (fid, 0)
            v.fieldId, v.scopeId = field_id, scope
            v.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
            per_link = {
                pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: g.nvlink_rx_kib,
                pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: g.nvlink_tx_kib,
            }.get(field_id)
            if per_link is None or g.nvlink_links == 0:
                v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            elif scope == ALL_LINKS and self.all_links_scope:
                v.nvmlReturn, v.value.ullVal = pynvml.NVML_SUCCESS, per_link * g.nvlink_links
            elif scope < g.nvlink_links:
                v.nvmlReturn, v.value.ullVal = pynvml.NVML_SUCCESS, per_link
            else:
                v.nvmlReturn = pynvml.NVML_ERROR_INVALID_ARGUMENT
        return values

    # -- events -----------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> Any:
        self.calls.append(("nvmlEventSetCreate",))
        return pynvml.c_nvmlEventSet_t()

    def nvmlDeviceRegisterEvents(self, h: Any, event_types: int, event_set: Any) -> None:
        g = self._dev(h, "nvmlDeviceRegisterEvents")
        assert event_types == pynvml.nvmlEventTypeXidCriticalError
        if not g.xid_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self._registered.add(self._index(h))

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        return self._wait("nvmlEventSetWait_v2", timeout_ms)

    def nvmlEventSetWait(self, event_set: Any, timeout_ms: int) -> Any:
        return self._wait("nvmlEventSetWait", timeout_ms)

    def nvmlEventSetFree(self, event_set: Any) -> None:
        self.calls.append(("nvmlEventSetFree",))
        self.event_sets_freed += 1

    # -- internals --------------------------------------------------------------------

    def _wait(self, name: str, timeout_ms: int) -> Any:
        self.calls.append((name, "timeout_ms", timeout_ms))
        if not self._events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        gpu, xid = self._events.pop(0)
        data = pynvml.c_nvmlEventData_t()
        data.device = ctypes.pointer(self._structs[gpu])  # a new pointer object, as NVML's
        data.eventType = pynvml.nvmlEventTypeXidCriticalError
        data.eventData = xid
        return data

    def _procs(self, g: FakeGpu) -> list[Any]:
        return [
            pynvml.nvmlFriendlyObject(
                {"pid": pid, "usedGpuMemory": used, "gpuInstanceId": NOT_MIG,
                 "computeInstanceId": NOT_MIG}
            )
            for pid, used in g.processes
        ]  # fmt: skip

    def _index(self, h: Any) -> int:
        address = ctypes.cast(h, ctypes.c_void_p).value
        for i, s in enumerate(self._structs):
            if ctypes.addressof(s) == address:
                return i
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def _dev(self, h: Any, function: str) -> FakeGpu:
        index = self._index(h)
        self._check(index, function)
        return self.gpus[index]

    def _check(self, index: int, function: str) -> None:
        if not self.initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        self.calls.append((function, index))
        for key in ((index, "*"), (index, function)):
            error = self._failures.get(key)
            if isinstance(error, BaseException):
                raise error
            if error is not None:
                raise pynvml.NVMLError(error)
