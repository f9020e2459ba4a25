"""The NVML collector: every GPU of a node read through NVIDIA's management library.

The NVML module is injected (``nvml=``) so tests can run against a recorded fake; the
default is ``pynvml`` from ``nvidia-ml-py``. Handles, UUIDs, names and the driver version
are read once; each tick then makes one NVML call per reading. ``NOT_SUPPORTED`` leaves a
field ``None`` silently, any other error leaves it ``None`` and names the error in
``GpuSample.errors``, and ``GPU_IS_LOST`` marks the GPU lost for the rest of the run.

NVLink counters come from ``nvmlDeviceGetFieldValues`` with
``NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX/TX`` (cumulative KiB). Those fields are per link,
chosen by ``scopeId``; scope ``UINT_MAX`` asks the driver for the sum over all links. A
driver that rejects it is read link by link, over the links active at start-up. The older
``nvmlDeviceGetNvLinkUtilizationCounter`` is deprecated and needs root to configure.

XID errors arrive through an NVML event set, drained without blocking on every tick.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final

from trainguard.errors import CollectorError
from trainguard.schemas.records import GpuProcess, GpuSample, XidEvent

__all__ = ["NvmlGpus"]

log = logging.getLogger(__name__)

_ALL_LINKS: Final = 0xFFFFFFFF  # the scopeId nvml.h defines as "sum over all links"
_KIB: Final = 1024
_MAX_EVENTS_PER_TICK: Final = 1024  # so that an event storm cannot stall a tick

#: A planned reading: the GpuSample fields it fills, the call, its extra arguments, and
#: how the raw result becomes those fields' values.
_Reading = tuple[tuple[str, ...], Callable[..., Any], tuple[Any, ...], Callable[[Any], tuple]]


class _GpuLost(Exception):
    """Raised inside a read when NVML says the GPU fell off the bus."""


@dataclass
class _Gpu:
    index: int
    handle: Any = None
    uuid: str | None = None
    model: str | None = None
    lost: bool = False
    #: Why no handle could be had; the GPU is then reported with only this error.
    broken: str | None = None
    #: ``scopeId`` values to read NVLink counters with; empty when NVLink is unsupported.
    nvlink_scopes: list[int] = field(default_factory=list)


class NvmlGpus:
    """All GPUs of this node, read through NVML; fulfils :class:`GpuCollector`."""

    backend = "nvml"

    def __init__(self, *, nvml: ModuleType | None = None, xid_wait_ms: int = 0) -> None:
        """Initialise NVML and discover the GPUs.

        Raises :class:`~trainguard.errors.CollectorError` when NVML cannot be used at all
        (no driver, no library, no permission).
        """
        self._nvml: Any = nvml if nvml is not None else _import_pynvml()
        nvml = self._nvml
        self._xid_wait_ms = xid_wait_ms
        self._closed = False
        self._names = {getattr(nvml, n): n for n in dir(nvml) if n.startswith("NVML_ERROR_")}
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise CollectorError(
                f"NVML is not available ({self._name(exc)}: {exc}); is the NVIDIA driver"
                " installed? use --backend simulated on machines without GPUs"
            ) from exc
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            nvml.nvmlShutdown()
            raise CollectorError(f"NVML cannot count the GPUs ({self._name(exc)}: {exc})") from exc
        self._driver_version: str | None = None
        try:
            self._driver_version = nvml.nvmlSystemGetDriverVersion()
        except nvml.NVMLError as exc:
            log.warning("driver version unreadable error=%s", self._name(exc))
        self._gpus = [self._discover(i) for i in range(count)]
        self._by_handle = {
            _handle_key(g.handle): g.index for g in self._gpus if g.handle is not None
        }
        self._events = self._register_xids()
        self._plan = self._readings()
        log.info("nvml ready gpus=%d driver=%s", count, self._driver_version)

    @property
    def gpu_count(self) -> int:
        """How many GPUs NVML enumerated (lost ones included)."""
        return len(self._gpus)

    @property
    def driver_version(self) -> str | None:
        """The NVIDIA driver version, e.g. ``"550.90.07"``."""
        return self._driver_version

    def collect(self, ts: float) -> list[GpuSample]:
        """Read every GPU at event time ``ts``; never raises for one GPU's failure."""
        xids = self._drain_xids(ts)
        return [self._sample(g, xids.get(g.index, [])) for g in self._gpus]

    def close(self) -> None:
        """Free the XID event set and shut NVML down; later calls do nothing."""
        nvml = self._nvml
        if self._closed:
            return
        self._closed = True
        if self._events is not None:
            event_set, self._events = self._events[0], None
            try:
                nvml.nvmlEventSetFree(event_set)
            except nvml.NVMLError as exc:
                log.warning("freeing the XID event set failed error=%s", self._name(exc))
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.warning("nvmlShutdown failed error=%s", self._name(exc))

    # -- start-up ------------------------------------------------------------------------

    def _discover(self, i: int) -> _Gpu:
        nvml = self._nvml
        gpu = _Gpu(index=i)
        try:
            gpu.handle = nvml.nvmlDeviceGetHandleByIndex(i)
            gpu.uuid = nvml.nvmlDeviceGetUUID(gpu.handle)
            gpu.model = nvml.nvmlDeviceGetName(gpu.handle)
        except nvml.NVMLError as exc:
            gpu.lost = exc.value == nvml.NVML_ERROR_GPU_IS_LOST
            if not gpu.lost and gpu.handle is None:
                gpu.broken = self._name(exc)
            log.warning("gpu=%d identity unreadable error=%s", i, self._name(exc))
        if gpu.handle is not None and not gpu.lost:
            gpu.nvlink_scopes = self._nvlink_scopes(gpu.handle)
        return gpu

    def _nvlink_scopes(self, handle: Any) -> list[int]:
        """The all-links scope where the driver offers it, else the active links."""
        nvml = self._nvml
        if not hasattr(nvml, "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX"):
            return []  # a binding older than the throughput fields
        try:
            self._nvlink(handle, [_ALL_LINKS])
            return [_ALL_LINKS]
        except nvml.NVMLError:
            pass  # rejected, or no NVLink at all: find out link by link
        active = []
        for link in range(nvml.NVML_NVLINK_MAX_LINKS):
            try:
                if nvml.nvmlDeviceGetNvLinkState(handle, link) == nvml.NVML_FEATURE_ENABLED:
                    active.append(link)
            except nvml.NVMLError:
                continue  # no NVLink, or past this GPU's last link (INVALID_ARGUMENT)
        return active

    def _register_xids(self) -> tuple[Any, int] | None:
        nvml = self._nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.warning("no XID events: no event set error=%s", self._name(exc))
            return None
        registered = 0
        for gpu in self._gpus:
            if gpu.handle is None or gpu.lost:
                continue
            try:
                xid_type = nvml.nvmlEventTypeXidCriticalError
                nvml.nvmlDeviceRegisterEvents(gpu.handle, xid_type, event_set)
                registered += 1
            except nvml.NVMLError as exc:
                if exc.value != nvml.NVML_ERROR_NOT_SUPPORTED:
                    log.warning("gpu=%d no XID events error=%s", gpu.index, self._name(exc))
        return event_set, registered

    def _readings(self) -> list[_Reading]:
        """What one tick reads: one NVML call per entry, NVLink aside (it is per GPU)."""
        c = self._nvml
        return [
            (("util_gpu_pct", "util_mem_pct"), c.nvmlDeviceGetUtilizationRates, (),
             lambda u: (float(u.gpu), float(u.memory))),
            (("mem_used_bytes", "mem_total_bytes"), c.nvmlDeviceGetMemoryInfo, (),
             lambda m: (int(m.used), int(m.total))),
            (("power_w",), c.nvmlDeviceGetPowerUsage, (), _watts),
            (("power_limit_w",), c.nvmlDeviceGetEnforcedPowerLimit, (), _watts),
            (("temp_c",), c.nvmlDeviceGetTemperature, (c.NVML_TEMPERATURE_GPU,), _float),
            (("sm_clock_mhz",), c.nvmlDeviceGetClockInfo, (c.NVML_CLOCK_SM,), _int),
            (("mem_clock_mhz",), c.nvmlDeviceGetClockInfo, (c.NVML_CLOCK_MEM,), _int),
            (("clock_event_reasons",), self._reasons, (), _int),
            # Each PCIe read samples the bus for ~20 ms in the driver: the slowest calls here.
            (("pcie_rx_bytes_s",), c.nvmlDeviceGetPcieThroughput,
             (c.NVML_PCIE_UTIL_RX_BYTES,), _kib_s),
            (("pcie_tx_bytes_s",), c.nvmlDeviceGetPcieThroughput,
             (c.NVML_PCIE_UTIL_TX_BYTES,), _kib_s),
            (("ecc_corrected",), c.nvmlDeviceGetTotalEccErrors,
             (c.NVML_MEMORY_ERROR_TYPE_CORRECTED, c.NVML_VOLATILE_ECC), _int),
            (("ecc_uncorrected",), c.nvmlDeviceGetTotalEccErrors,
             (c.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, c.NVML_VOLATILE_ECC), _int),
            (("remapped_rows_correctable", "remapped_rows_uncorrectable", "remap_pending",
              "remap_failed"), c.nvmlDeviceGetRemappedRows, (),
             lambda r: (int(r[0]), int(r[1]), bool(r[2]), bool(r[3]))),
            (("compute_procs", "processes"), self._processes, (), lambda p: (len(p), p)),
        ]  # fmt: skip

    # -- per tick ------------------------------------------------------------------------

    def _drain_xids(self, ts: float) -> dict[int, list[XidEvent]]:
        """Take every pending XID event, waiting at most ``xid_wait_ms`` per call."""
        out: dict[int, list[XidEvent]] = {}
        if self._events is None or not self._events[1]:
            return out
        nvml = self._nvml
        wait = getattr(nvml, "nvmlEventSetWait_v2", None) or nvml.nvmlEventSetWait
        for _ in range(_MAX_EVENTS_PER_TICK):
            try:
                data = wait(self._events[0], self._xid_wait_ms)
            except nvml.NVMLError as exc:
                if exc.value != nvml.NVML_ERROR_TIMEOUT:  # TIMEOUT: nothing (more) pending
                    log.warning("waiting for XID events failed error=%s", self._name(exc))
                break
            index = self._by_handle.get(_handle_key(data.device))
            if not data.eventType & nvml.nvmlEventTypeXidCriticalError or index is None:
                log.warning("event type=%#x data=%d dropped", data.eventType, data.eventData)
                continue
            out.setdefault(index, []).append(XidEvent(xid=int(data.eventData), ts=ts))
        return out

    def _sample(self, gpu: _Gpu, xids: list[XidEvent]) -> GpuSample:
        if gpu.broken is not None:
            return GpuSample(index=gpu.index, errors={"handle": gpu.broken}, xid_events=tuple(xids))
        if not gpu.lost:
            try:
                return self._read(gpu, xids)
            except _GpuLost:
                log.error("gpu=%d uuid=%s is lost (fell off the bus)", gpu.index, gpu.uuid)
                gpu.lost = True
        # A lost GPU keeps its XIDs: XID 79 is usually why it is lost.
        return GpuSample(index=gpu.index, uuid=gpu.uuid, lost=True, xid_events=tuple(xids))

    def _read(self, gpu: _Gpu, xids: list[XidEvent]) -> GpuSample:
        nvml = self._nvml
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        plan = list(self._plan)
        if gpu.nvlink_scopes:
            plan.append((("nvlink_rx_bytes", "nvlink_tx_bytes"), self._nvlink,
                         (gpu.nvlink_scopes,), tuple))  # fmt: skip
        for fields, fn, args, convert in plan:
            try:
                values.update(zip(fields, convert(fn(gpu.handle, *args)), strict=True))
            except nvml.NVMLError as exc:
                if exc.value == nvml.NVML_ERROR_GPU_IS_LOST:
                    raise _GpuLost from exc
                if exc.value != nvml.NVML_ERROR_NOT_SUPPORTED:
                    errors.update(dict.fromkeys(fields, self._name(exc)))
        return GpuSample(
            index=gpu.index,
            uuid=gpu.uuid,
            model=gpu.model,
            xid_events=tuple(xids),
            errors=errors,
            **values,
        )

    def _reasons(self, handle: Any) -> Any:
        nvml = self._nvml
        # Renamed "event reasons" in NVML 12.2: older bindings lack the new name, and a new
        # binding over an older driver raises FUNCTION_NOT_FOUND for it.
        fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if fn is not None:
            try:
                return fn(handle)
            except nvml.NVMLError as exc:
                if exc.value != nvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                    raise
        return nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        nvml = self._nvml
        try:
            infos = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLLibraryMismatchError:
            # The unversioned call wants the driver's _v3 symbol; older drivers have _v2.
            infos = nvml.nvmlDeviceGetComputeRunningProcesses_v2(handle)
        # usedGpuMemory is None where the driver cannot attribute memory (e.g. WDDM).
        return tuple(
            GpuProcess(pid=int(p.pid), used_mem_bytes=_maybe_int(p.usedGpuMemory)) for p in infos
        )

    def _nvlink(self, handle: Any, scopes: list[int]) -> tuple[int, int]:
        """Cumulative NVLink (rx, tx) bytes summed over ``scopes``.

        Raises the NVML error of the worst failed field: a partial sum would look like a
        counter reset downstream.
        """
        nvml = self._nvml
        # (fieldId, scopeId) tuples: given a bare fieldId pynvml leaves scope 0 (link 0 only).
        ids = [(nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, s) for s in scopes]
        ids += [(nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, s) for s in scopes]
        values = nvml.nvmlDeviceGetFieldValues(handle, ids)
        failed = {v.nvmlReturn for v in values} - {nvml.NVML_SUCCESS}
        if failed:
            # Lost outranks any other error, and any error outranks "not supported".
            lost, unsupported = nvml.NVML_ERROR_GPU_IS_LOST, nvml.NVML_ERROR_NOT_SUPPORTED
            worst = lost if lost in failed else min(failed - {unsupported}, default=unsupported)
            raise nvml.NVMLError(worst)
        n = len(scopes)
        rx = sum(int(v.value.ullVal) for v in values[:n])
        tx = sum(int(v.value.ullVal) for v in values[n:])
        return rx * _KIB, tx * _KIB

    def _name(self, exc: Any) -> str:
        """``NVML_ERROR_UNKNOWN`` and so on, for logs and ``GpuSample.errors``."""
        return self._names.get(exc.value, f"NVML error {exc.value}")


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:
        raise CollectorError(
            "the nvidia-ml-py package is not installed; install trainguard[agent]"
            " or use --backend simulated"
        ) from exc
    return pynvml


def _handle_key(handle: Any) -> Any:
    """A hashable identity for a device handle.

    pynvml handles are ctypes pointers: unhashable, equal only to themselves, and an event
    carries a new pointer object. The address they point to identifies the device.
    """
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return handle


def _watts(milliwatts: int) -> tuple[float]:
    return (milliwatts / 1000.0,)


def _kib_s(kib_per_s: int) -> tuple[float]:
    return (float(kib_per_s * _KIB),)  # NVML's PCIe "KB/s" are KiB/s


def _float(v: Any) -> tuple[float]:
    return (float(v),)


def _int(v: Any) -> tuple[int]:
    return (int(v),)


def _maybe_int(v: Any) -> int | None:
    return None if v is None else int(v)
