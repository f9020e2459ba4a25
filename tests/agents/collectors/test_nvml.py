import ctypes.util

import msgspec
import pynvml
import pytest

from tests.agents.collectors.fake_pynvml import MIB, FakeNvml, h100_node
from trainguard.agents.collectors import GpuCollector
from trainguard.agents.collectors.nvml import NvmlGpus
from trainguard.errors import CollectorError
from trainguard.schemas.records import GpuProcess, GpuSample

TS = 1_795_000_100.0


@pytest.fixture
def fake():
    return FakeNvml()


@pytest.fixture
def gpus(fake):
    collector = NvmlGpus(nvml=fake)
    yield collector
    collector.close()


def test_nvml_backend_satisfies_the_collector_contract(gpus):
    assert isinstance(gpus, GpuCollector)
    assert gpus.backend == "nvml"
    assert gpus.gpu_count == 8
    assert gpus.driver_version == "550.90.07"


def test_every_field_is_read_and_converted_to_schema_units(gpus):
    s = gpus.collect(TS)[0]
    assert s == GpuSample(
        index=0,
        uuid="GPU-8f3c0000-2b1e-4d9a-b7c6-5e0a1f2d3c00",
        model="NVIDIA H100 80GB HBM3",
        util_gpu_pct=97.0,
        util_mem_pct=45.0,
        mem_used_bytes=77737 * MIB,
        mem_total_bytes=81559 * MIB,
        power_w=612.417,  # mW -> W
        power_limit_w=700.0,
        temp_c=64.0,
        sm_clock_mhz=1980,
        mem_clock_mhz=2619,
        clock_event_reasons=0,
        pcie_rx_bytes_s=412_334 * 1024.0,  # KB/s -> B/s
        pcie_tx_bytes_s=187_520 * 1024.0,
        nvlink_rx_bytes=18 * 4_126_377_201 * 1024,  # KiB summed over 18 links -> B
        nvlink_tx_bytes=18 * 4_126_301_958 * 1024,
        ecc_corrected=0,
        ecc_uncorrected=0,
        remapped_rows_correctable=0,
        remapped_rows_uncorrectable=0,
        remap_pending=False,
        remap_failed=False,
        compute_procs=1,
        processes=(GpuProcess(pid=1_843_201, used_mem_bytes=77_112 * MIB),),
    )


def test_samples_survive_the_wire_contract(gpus):
    batch = gpus.collect(TS)
    wire = msgspec.json.encode(batch)
    assert msgspec.json.decode(wire, type=list[GpuSample]) == batch
    assert [s.index for s in batch] == list(range(8))


def test_not_supported_fields_are_absent_without_an_error(fake, gpus):
    fake.fail(2, "nvmlDeviceGetRemappedRows", pynvml.NVML_ERROR_NOT_SUPPORTED)
    fake.fail(2, "nvmlDeviceGetTotalEccErrors", pynvml.NVML_ERROR_NOT_SUPPORTED)
    s = gpus.collect(TS)[2]
    assert s.remapped_rows_correctable is None and s.remap_pending is None
    assert s.ecc_corrected is None and s.ecc_uncorrected is None
    assert s.errors == {}
    assert s.power_w == 633.902


def test_an_unknown_error_names_the_field_and_the_others_still_read(fake, gpus):
    fake.fail(1, "nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_UNKNOWN)
    s = gpus.collect(TS)[1]
    assert s.power_w is None
    assert s.errors == {"power_w": "NVML_ERROR_UNKNOWN"}
    assert s.power_limit_w == 700.0 and s.util_gpu_pct == 96.0 and s.compute_procs == 1


def test_an_error_on_a_multi_field_call_names_every_field_it_feeds(fake, gpus):
    fake.fail(0, "nvmlDeviceGetUtilizationRates", pynvml.NVML_ERROR_NO_PERMISSION)
    s = gpus.collect(TS)[0]
    assert s.errors == {
        "util_gpu_pct": "NVML_ERROR_NO_PERMISSION",
        "util_mem_pct": "NVML_ERROR_NO_PERMISSION",
    }


def test_a_lost_gpu_is_reported_lost_and_the_others_read_normally(fake, gpus):
    gpus.collect(TS)
    fake.lose(3)
    first = gpus.collect(TS + 1)
    assert first[3] == GpuSample(index=3, uuid=h100_node()[3].uuid, lost=True)
    assert all(not s.lost and s.power_w for i, s in enumerate(first) if i != 3)
    calls_before = len(fake.device_calls(3))
    second = gpus.collect(TS + 2)
    assert second[3].lost and not any(s.lost for i, s in enumerate(second) if i != 3)
    assert len(fake.device_calls(3)) == calls_before  # not read again once lost


def test_a_gpu_lost_in_the_middle_of_a_read_drops_its_partial_readings(fake, gpus):
    fake.fail(5, "nvmlDeviceGetPcieThroughput", pynvml.NVML_ERROR_GPU_IS_LOST)
    s = gpus.collect(TS)[5]
    assert s.lost and s.power_w is None and s.errors == {}


def test_a_gpu_lost_before_start_up_is_reported_lost():
    fake = FakeNvml()
    fake.lose(7)
    gpus = NvmlGpus(nvml=fake)
    samples = gpus.collect(TS)
    assert samples[7].lost and samples[7].uuid is None
    assert not samples[6].lost


def test_xids_are_drained_without_blocking_and_go_to_their_gpu(fake):
    gpus = NvmlGpus(nvml=fake, xid_wait_ms=0)
    fake.queue_xid(4, 79)
    fake.queue_xid(1, 48)
    fake.queue_xid(4, 94)
    samples = gpus.collect(TS)
    assert [(e.xid, e.ts) for e in samples[4].xid_events] == [(79, TS), (94, TS)]
    assert [e.xid for e in samples[1].xid_events] == [48]
    assert not samples[0].xid_events
    waits = [c for c in fake.calls if c[0] == "nvmlEventSetWait_v2"]
    assert waits == [("nvmlEventSetWait_v2", "timeout_ms", 0)] * 4  # 3 events, then TIMEOUT
    assert not gpus.collect(TS + 1)[4].xid_events


def test_the_xid_wait_uses_the_configured_timeout(fake):
    gpus = NvmlGpus(nvml=fake, xid_wait_ms=5)
    gpus.collect(TS)
    assert ("nvmlEventSetWait_v2", "timeout_ms", 5) in fake.calls


def test_a_lost_gpu_keeps_the_xid_that_explains_it(fake, gpus):
    fake.queue_xid(6, 79)
    fake.lose(6)
    s = gpus.collect(TS)[6]
    assert s.lost and [e.xid for e in s.xid_events] == [79]


def test_gpus_without_xid_events_are_skipped_and_the_others_still_report():
    node = h100_node()
    node[0].xid_supported = False
    fake = FakeNvml(node)
    gpus = NvmlGpus(nvml=fake)
    fake.queue_xid(0, 31)  # never delivered: not registered
    fake.queue_xid(2, 31)
    samples = gpus.collect(TS)
    assert not samples[0].xid_events and [e.xid for e in samples[2].xid_events] == [31]


@pytest.mark.parametrize(
    "code, text",
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "NVML_ERROR_DRIVER_NOT_LOADED: Driver Not Loaded"),
        (
            pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
            "NVML_ERROR_LIBRARY_NOT_FOUND: NVML Shared Library Not Found",
        ),
        (pynvml.NVML_ERROR_NO_PERMISSION, "NVML_ERROR_NO_PERMISSION: Insufficient Permissions"),
    ],
)
def test_no_usable_driver_raises_one_clear_line(code, text):
    with pytest.raises(CollectorError) as info:
        NvmlGpus(nvml=FakeNvml(init_error=code))
    message = str(info.value)
    assert "\n" not in message
    assert f"NVML is not available ({text})" in message
    assert "--backend simulated" in message


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None, reason="this machine has an NVIDIA driver"
)
def test_the_real_pynvml_without_a_driver_raises_collector_error():
    with pytest.raises(CollectorError, match=r"^NVML is not available \(NVML_ERROR_"):
        NvmlGpus()


def test_close_frees_the_event_set_and_shuts_nvml_down(fake):
    gpus = NvmlGpus(nvml=fake)
    gpus.close()
    assert fake.event_sets_freed == 1
    assert fake.calls[-1] == ("nvmlShutdown",) and not fake.initialized


def test_a_process_without_memory_accounting_has_none(fake, gpus):
    fake.gpus[0].processes = [(4242, None), (4243, 1024 * MIB)]
    s = gpus.collect(TS)[0]
    assert s.compute_procs == 2
    assert s.processes == (
        GpuProcess(pid=4242, used_mem_bytes=None),
        GpuProcess(pid=4243, used_mem_bytes=1024 * MIB),
    )


def test_an_idle_gpu_reports_zero_processes(fake, gpus):
    fake.gpus[0].processes = []
    s = gpus.collect(TS)[0]
    assert s.compute_procs == 0 and s.processes == ()


def test_an_old_driver_falls_back_to_the_v2_process_call(fake, gpus):
    mismatch = pynvml.NVMLLibraryMismatchError("no _v3 in this driver")
    fake.fail(0, "nvmlDeviceGetComputeRunningProcesses", mismatch)
    s = gpus.collect(TS)[0]
    assert s.compute_procs == 1 and s.errors == {}


def test_nvlink_is_read_per_link_where_the_all_links_scope_is_rejected():
    fake = FakeNvml(all_links_scope=False)
    s = NvmlGpus(nvml=fake).collect(TS)[0]
    assert s.nvlink_rx_bytes == 18 * 4_126_377_201 * 1024
    assert s.nvlink_tx_bytes == 18 * 4_126_301_958 * 1024
    assert fake.device_calls(0).count("nvmlDeviceGetNvLinkState") == pynvml.NVML_NVLINK_MAX_LINKS


def test_a_gpu_without_nvlink_has_no_nvlink_counters_and_no_error():
    node = h100_node()
    node[0].nvlink_links = 0  # an H100 PCIe card
    s = NvmlGpus(nvml=FakeNvml(node)).collect(TS)[0]
    assert s.nvlink_rx_bytes is None and s.nvlink_tx_bytes is None and s.errors == {}
    assert s.power_w is not None


def test_an_nvlink_read_error_is_reported(fake, gpus):
    fake.fail(0, "nvmlDeviceGetFieldValues", pynvml.NVML_ERROR_UNKNOWN)
    s = gpus.collect(TS)[0]
    assert s.nvlink_rx_bytes is None
    assert s.errors == {
        "nvlink_rx_bytes": "NVML_ERROR_UNKNOWN",
        "nvlink_tx_bytes": "NVML_ERROR_UNKNOWN",
    }


def test_clock_event_reasons_fall_back_to_throttle_reasons_on_an_old_driver(fake, gpus):
    fake.gpus[0].clock_reasons = 0x4 | 0x8  # SW power cap + HW slowdown
    fake.fail(0, "nvmlDeviceGetCurrentClocksEventReasons", pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    s = gpus.collect(TS)[0]
    assert s.clock_event_reasons == 0xC and s.errors == {}


def test_an_older_binding_uses_throttle_reasons_and_the_unversioned_wait():
    fake = FakeNvml(legacy=True)
    gpus = NvmlGpus(nvml=fake)
    fake.queue_xid(0, 13)
    s = gpus.collect(TS)[0]
    assert s.clock_event_reasons == 0 and [e.xid for e in s.xid_events] == [13]
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in fake.device_calls(0)
    assert ("nvmlEventSetWait", "timeout_ms", 0) in fake.calls


def test_closing_twice_shuts_nvml_down_once(fake):
    gpus = NvmlGpus(nvml=fake)
    gpus.close()
    gpus.close()
    assert fake.calls.count(("nvmlShutdown",)) == 1 and fake.event_sets_freed == 1


def test_a_gpu_without_a_handle_is_reported_with_the_reason():
    fake = FakeNvml()
    fake.fail(1, "nvmlDeviceGetHandleByIndex", pynvml.NVML_ERROR_NO_PERMISSION)
    samples = NvmlGpus(nvml=fake).collect(TS)
    assert samples[1] == GpuSample(index=1, errors={"handle": "NVML_ERROR_NO_PERMISSION"})
    assert samples[0].power_w is not None and samples[2].power_w is not None
