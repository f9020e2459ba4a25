"""The waiting watchdog's schedule and the optimizer probe, without processes or sleeps."""

import torch

from trainguard.agents.trainer.grads import OptimizerProbe, WaitingWatchdog


class FakeTracer:
    def __init__(self):
        self.inflight = None

    def oldest_inflight(self):
        return self.inflight


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_waiting_is_sent_after_the_threshold_and_then_every_threshold_until_done():
    tracer, clock, sent = FakeTracer(), Clock(), []
    dog = WaitingWatchdog(tracer, lambda since, seq: sent.append((since, seq)), after_s=2.0,
                          clock=clock)
    assert not dog.poll()
    tracer.inflight = (7, 100.0, 1_700_000_000.0)
    clock.now = 101.9
    assert not dog.poll()
    clock.now = 102.0
    assert dog.poll() and sent == [(1_700_000_000.0, 7)]
    clock.now = 103.0
    assert not dog.poll()
    clock.now = 104.1
    assert dog.poll() and len(sent) == 2
    tracer.inflight = None  # the collective completed
    clock.now = 110.0
    assert not dog.poll() and dog.sent == 2


def test_a_new_collective_waits_its_own_threshold():
    tracer, clock, sent = FakeTracer(), Clock(), []
    dog = WaitingWatchdog(tracer, lambda since, seq: sent.append(seq), after_s=1.0, clock=clock)
    tracer.inflight = (1, 100.0, 5.0)
    clock.now = 101.0
    dog.poll()
    tracer.inflight = (2, 101.5, 6.0)
    clock.now = 102.0
    assert not dog.poll()
    clock.now = 102.5
    assert dog.poll() and sent == [1, 2]


def test_the_probe_reads_lr_and_grad_norm_before_zero_grad():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.25)
    probe = OptimizerProbe(opt, grad_norm=True, clock=lambda: 5.0)
    model(torch.ones(4, 3)).sum().backward()
    expected = sum(p.grad.pow(2).sum().item() for p in model.parameters()) ** 0.5
    opt.step()
    opt.zero_grad()
    lr, at, norm = probe.take()
    assert lr == 0.25 and at == 5.0 and abs(norm - expected) < 1e-5 * expected
    assert probe.take()[1:] == (None, None)
    probe.remove()
    opt.step()
    assert probe.at is None


def test_a_wrapped_optimizer_is_probed_through_its_inner_optimizer():
    model = torch.nn.Linear(3, 2)
    inner = torch.optim.SGD(model.parameters(), lr=0.5)

    class Wrapper:  # like accelerate's AcceleratedOptimizer / Lightning's LightningOptimizer
        def __init__(self, optimizer):
            self.optimizer = optimizer
            self.param_groups = optimizer.param_groups

        def step(self):
            self.optimizer.step()

    probe = OptimizerProbe(Wrapper(inner), grad_norm=False, clock=lambda: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    Wrapper(inner).step()
    assert probe.take()[:2] == (0.5, 1.0)
