"""The eval's player keeps pace with the worker (fakes for the worker and the producer)."""

import pytest

from trainguard.errors import ConfigError, TrainguardError
from trainguard.evaluation.run import EvalOptions, _keep_up, _runs
from trainguard.evaluation.sweep import SWEEPS


class _Worker:
    def __init__(self, counts):
        self.counts, self.queries = list(counts), 0

    def scalar(self, sql):
        self.queries += 1
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]

    def check_alive(self):
        pass


class _Stack:
    def __init__(self, counts):
        self.worker = _Worker(counts)


class _Transport:
    flushed = 0

    def flush(self, timeout=None):
        self.flushed += 1


def test_the_player_waits_until_the_worker_is_within_the_allowed_lag(monkeypatch):
    monkeypatch.setattr("trainguard.evaluation.run.time.sleep", lambda s: None)
    stack, transport = _Stack([10, 40, 85, 95]), _Transport()
    _keep_up(stack, transport, produced=100, allowed=10)
    assert stack.worker.queries == 4 and transport.flushed == 3  # 95 stored: 5 behind


def test_the_player_gives_up_when_the_worker_stops_storing(monkeypatch):
    now = iter(range(0, 10_000, 100))
    monkeypatch.setattr("trainguard.evaluation.run.time.sleep", lambda s: None)
    monkeypatch.setattr("trainguard.evaluation.run.time.monotonic", lambda: float(next(now)))
    with pytest.raises(TrainguardError, match="worker stored 5 of 100 sample batches and no"):
        _keep_up(_Stack([5]), _Transport(), produced=100, allowed=10, stall_s=300)


def test_sweep_variants_become_jobs_with_their_parameter_beside_plain_scenarios(tmp_path):
    opts = EvalOptions(data_dir=tmp_path, scenarios=("kill",), seeds=(0, 1),
                       variants=tuple(SWEEPS["straggler"].variants()[:2]))
    runs = _runs(opts, "p")
    assert [(r.scenario, r.seed) for r in runs][:3] == [("kill", 0), ("kill", 1),
                                                        ("node_slowdown:factor:1.03", 0)]
    assert runs[2].sim.spec.job_id == "node_slowdown:factor:1.03-s0"
    assert runs[2].sim.scenario.factor == 1.03 and runs[4].sim.scenario.factor == 1.05


def test_only_the_variants_run_when_no_scenario_is_named(tmp_path):
    opts = EvalOptions(data_dir=tmp_path, seeds=(0,), variants=(SWEEPS["loss"].variant(0.02),))
    assert [r.scenario for r in _runs(opts, "p")] == ["poisoned_data:loss_increase:0.02"]
    with pytest.raises(ConfigError, match="max_lag_ticks must be >= 0, got -1"):
        EvalOptions(data_dir=tmp_path, max_lag_ticks=-1)
