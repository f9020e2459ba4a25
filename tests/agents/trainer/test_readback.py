"""Readback: device values wait in a short queue for their copy event, never a per-step sync.

No GPU here: the device path runs with a stand-in event (the copy itself is the CPU's)."""

import torch

from trainguard.agents.trainer import readback
from trainguard.agents.trainer.readback import Readback


class FakeEvent:
    def __init__(self):
        self.done = False
        self.synced = False

    def query(self):
        return self.done

    def synchronize(self):
        self.synced = self.done = True


def fake_device(monkeypatch):
    events = []

    def launch(pending, values):
        pending.buffer = torch.stack(values).clone()
        pending.event = FakeEvent()
        events.append(pending.event)

    monkeypatch.setattr(readback, "_is_device_tensor", lambda v: isinstance(v, torch.Tensor))
    monkeypatch.setattr(Readback, "_launch", staticmethod(launch))
    return events


def test_host_values_are_ready_at_once():
    rb = Readback()
    rb.submit("s0", {"loss": 1.5, "lr": None}, torch.tensor(-5))
    [ready] = rb.ready()
    assert (ready.meta, ready.values, ready.checksum) == ("s0", {"loss": 1.5, "lr": None}, -5)


def test_device_values_wait_for_their_event_and_keep_the_digest_bits(monkeypatch):
    events = fake_device(monkeypatch)
    rb = Readback(max_lag=2)
    digest = torch.tensor(-(2**63) + 12345, dtype=torch.int64)
    rb.submit(0, {"loss": torch.tensor(2.5), "lr": 0.1}, digest)
    assert rb.ready() == [] and len(rb) == 1
    events[0].done = True
    [ready] = rb.ready()
    assert ready.values == {"lr": 0.1, "loss": 2.5} and ready.checksum == -(2**63) + 12345
    assert not events[0].synced


def test_past_the_lag_the_oldest_step_is_waited_for_in_order(monkeypatch):
    events = fake_device(monkeypatch)
    rb = Readback(max_lag=2)
    for step in range(3):
        rb.submit(step, {"loss": torch.tensor(float(step))})
    out = rb.ready()
    assert [r.meta for r in out] == [0] and events[0].synced and not events[1].synced
    assert [r.meta for r in rb.flush()] == [1, 2] and len(rb) == 0
