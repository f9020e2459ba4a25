import pytest

from trainguard.agents.collectors import FAULT_MODES, GpuCollector, SimulatedGpus

T0 = 1_795_000_100.0  # outside the first checkpoint pause of the default schedule


def test_simulated_backend_satisfies_the_collector_contract():
    assert isinstance(SimulatedGpus("n1", 2), GpuCollector)


def test_same_seed_gives_identical_readings():
    a = SimulatedGpus("n1", 4, seed=7).collect(T0)
    b = SimulatedGpus("n1", 4, seed=7).collect(T0)
    assert a == b
    assert a != SimulatedGpus("n1", 4, seed=8).collect(T0)


def test_gpus_are_busy_during_steps_and_dip_at_checkpoints():
    gpus = SimulatedGpus("n1", 8, checkpoint_every_s=600, checkpoint_pause_s=20)
    busy = gpus.collect(T0 - (T0 % 600) + 100)
    pause = gpus.collect(T0 - (T0 % 600) + 5)
    assert min(g.util_gpu_pct for g in busy) > 80
    assert max(g.util_gpu_pct for g in pause) < 20


def test_lost_gpu_is_reported_with_no_readings():
    gpus = SimulatedGpus("n1", 2)
    gpus.inject(1, "lost")
    lost = gpus.collect(T0)[1]
    assert lost.lost and lost.util_gpu_pct is None and lost.power_w is None


@pytest.mark.parametrize("mode", ["idle", "throttled", "hot", "xid"])
def test_each_fault_mode_changes_what_the_gpu_reports(mode):
    healthy = SimulatedGpus("n1", 1, seed=1).collect(T0)[0]
    gpus = SimulatedGpus("n1", 1, seed=1)
    gpus.inject(0, mode)
    faulty = gpus.collect(T0)[0]
    if mode == "idle":
        assert faulty.util_gpu_pct < 20 < healthy.util_gpu_pct
    elif mode == "throttled":
        assert faulty.sm_clock_mhz < healthy.sm_clock_mhz and faulty.clock_event_reasons
    elif mode == "hot":
        assert faulty.temp_c > 85 > healthy.temp_c
    else:
        assert [e.xid for e in faulty.xid_events] == [79] and not healthy.xid_events


def test_healing_a_fault_restores_normal_readings():
    gpus = SimulatedGpus("n1", 1)
    gpus.inject(0, "idle")
    gpus.inject(0, None)
    assert gpus.collect(T0)[0].util_gpu_pct > 80


def test_unknown_fault_mode_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="expected one of: " + ", ".join(FAULT_MODES)):
        SimulatedGpus("n1", 1).inject(0, "melted")
