"""Digest cadence: the pure choice of N, calibration, and replicas that choose differently."""

import pytest
import torch

from tests.agents.trainer.test_guard import make_job, train
from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer import TrainGuard
from trainguard.agents.trainer.cadence import CALIBRATION_STEPS, Cadence, choose_every


@pytest.mark.parametrize(("digest_s", "step_s", "expected"), [
    (0.0, 1.0, 1),          # free: every step
    (0.005, 1.0, 1),        # exactly the budget
    (0.0051, 1.0, 2),       # just over: the next power of two
    (0.03, 1.0, 8),         # 6x the budget -> 8
    (0.32, 1.0, 64),        # 64x: the cap
    (10.0, 1.0, 64),        # far over: still the cap
    (0.01, 0.0, 64),        # no step time measured: the cap
    (0.01, float("nan"), 64),
])
def test_choose_every_is_the_smallest_power_of_two_within_budget(digest_s, step_s, expected):
    assert choose_every(digest_s, step_s) == expected


def test_choose_every_honours_budget_and_cap():
    assert choose_every(0.02, 1.0, budget=0.01) == 2
    assert choose_every(0.02, 1.0, budget=0.01, max_every=1) == 1
    assert choose_every(1.0, 1.0, max_every=16) == 16
    with pytest.raises(ValueError, match="checksum_max_every 48"):
        choose_every(1.0, 1.0, max_every=48)
    with pytest.raises(ValueError, match="checksum_budget 0"):
        choose_every(1.0, 1.0, budget=0)


def test_an_explicit_interval_keeps_its_meaning():
    cadence = Cadence(3)
    assert not cadence.calibrating and cadence.every == 3
    assert [i for i in range(10) if cadence.due(i)] == [0, 3, 6, 9]
    assert not any(Cadence(0).due(i) for i in range(10))
    with pytest.raises(ValueError, match="'often'"):
        Cadence("often")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-1"):
        Cadence(-1)


def test_auto_digests_every_step_while_calibrating_then_every_chosen_n():
    cadence = Cadence(calibration_steps=3)
    assert [cadence.due(i) for i in range(3)] == [True, True, True]
    assert cadence.observe(0.5, 10.0) is None  # a slow first digest (warm-up)...
    assert cadence.observe(0.2, 10.0) is None
    assert cadence.observe(0.2, 10.0) == 4     # ...the median (0.2 s = 0.4 x budget x 10)
    assert cadence.measured == (0.2, 10.0) and cadence.every == 4
    assert [i for i in range(3, 17) if cadence.due(i)] == [4, 8, 12, 16]
    assert cadence.observe(9.0, 1.0) is None   # after calibration: ignored
    assert cadence.every == 4


def test_replicas_with_different_calibrations_share_every_multiple_of_the_largest_n():
    cheap, dear = Cadence(calibration_steps=2), Cadence(calibration_steps=2)
    for _ in range(2):
        cheap.observe(0.001, 1.0)
        dear.observe(0.1, 1.0)
    assert (cheap.every, dear.every) == (1, 32)
    steps = range(2, 300)
    both = {i for i in steps if cheap.due(i)} & {i for i in steps if dear.due(i)}
    assert both == {i for i in steps if i % 32 == 0}


def _guard_steps(receiver, budget, steps):
    model, opt = make_job()
    reporter = StepReporter("job-c", 0, 1, socket_path=str(receiver.path), node="n1")
    guard = TrainGuard.attach(model, opt, reporter=reporter, checksum_budget=budget)
    train(guard, model, opt, steps)
    every = guard.checksum_every
    guard.close()
    reporter.close()
    return every, {s.checksum_step: s.param_checksum for s in receiver.steps()
                   if s.checksum_step is not None}


def test_two_guards_with_different_budgets_still_digest_the_same_steps_alike(sock_dir):
    from tests.agents.trainer.wire import Receiver

    digests = []
    # Any cost fits a's budget (an infinite one: a finite one can be outrun by a digest
    # that a loaded machine delays, which made this test flaky), none fits b's.
    for name, budget in (("a", float("inf")), ("b", 1e-12)):
        receiver = Receiver(sock_dir / f"{name}.sock")
        try:
            digests.append(_guard_steps(receiver, budget, 140))
        finally:
            receiver.close()
    (every_a, a), (every_b, b) = digests
    assert (every_a, every_b) == (1, 64)
    assert set(b) == set(range(CALIBRATION_STEPS)) | {64, 128}
    assert set(b) <= set(a)
    # the same seed and data: identical replicas, identical digests at the shared steps
    assert all(a[s] == b[s] for s in b)


def test_a_cpu_digest_is_timed_without_a_device_sync():
    from trainguard.agents.trainer.cadence import _device_sync, _no_sync
    from trainguard.agents.trainer.checksum import ParamChecksum

    assert _device_sync(ParamChecksum([torch.ones(3)])) is _no_sync


def _agree_worker(rank, world, init, out, budgets):
    import json
    from pathlib import Path

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tests.agents.trainer.wire import Receiver

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    receiver = Receiver(Path(out) / f"r{rank}.sock")
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(torch.nn.Linear(4, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        reporter = StepReporter("job-a", rank, world, socket_path=str(receiver.path), node="n")
        guard = TrainGuard.attach(model, opt, reporter=reporter, checksum_budget=budgets[rank])
        for _ in range(CALIBRATION_STEPS + 20):
            model(torch.randn(3, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
            guard.step(None)
        every = guard.checksum_every
        guard.close()
        digested = sorted(s.checksum_step for s in receiver.steps() if s.checksum_step is not None)
        Path(out, f"{rank}.json").write_text(json.dumps({"every": every, "digested": digested}))
    finally:
        receiver.close()
        dist.destroy_process_group()


def test_ranks_of_a_distributed_job_agree_on_the_largest_interval(sock_dir):
    import json

    import torch.multiprocessing as mp

    # rank 0 fits any cost in its budget (N = 1), rank 1 none (N = the cap)
    mp.spawn(_agree_worker, args=(2, str(sock_dir / "init"), str(sock_dir), [100.0, 1e-12]),
             nprocs=2, join=True)
    results = [json.loads((sock_dir / f"{r}.json").read_text()) for r in (0, 1)]
    assert [r["every"] for r in results] == [64, 64]
    assert results[0]["digested"] == results[1]["digested"] == list(range(CALIBRATION_STEPS))


def test_setting_checksum_every_on_a_guard_replaces_auto_with_the_interval(receiver, reporter):
    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter)
    guard.checksum_every = 3
    train(guard, model, opt, 7)
    guard.close()
    assert [s.checksum_step for s in receiver.steps()] == [0, None, None, 3, None, None, 6]
