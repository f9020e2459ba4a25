"""The kit's ``busy`` reports: at once, repeated while the phase lasts, none after it."""

from __future__ import annotations

import threading
import time

import pytest

from trainguard.agents.trainer.busy import BusyPhaseReporter
from trainguard.schemas.ranks import BusyPhase


class _Sink:
    def __init__(self) -> None:
        self.beats: list[tuple[BusyPhase, float]] = []
        self.more = threading.Event()

    def __call__(self, phase: BusyPhase, since: float) -> None:
        self.beats.append((phase, since))
        self.more.set()


def _wait_for(sink: _Sink, n: int) -> None:
    deadline = time.monotonic() + 10  # bounded: a stuck thread fails the test, not hangs it
    while len(sink.beats) < n and time.monotonic() < deadline:
        sink.more.wait(0.5)
        sink.more.clear()


def test_busy_is_said_at_once_and_repeated_with_the_phase_start():
    sink = _Sink()
    clock = iter([1000.0, 2000.0, 3000.0])
    with BusyPhaseReporter(sink, "checkpoint", every_s=0.05, clock=lambda: next(clock)) as b:
        assert sink.beats == [("checkpoint", 1000.0)]  # before any work of the phase
        _wait_for(sink, 3)
    assert len(sink.beats) >= 3 and b.sent == len(sink.beats)
    # Every repeat names when the phase started, not when it was repeated.
    assert {since for _, since in sink.beats} == {1000.0}


def test_no_busy_after_the_phase_and_a_nested_phase_keeps_one_thread():
    sink = _Sink()
    busy = BusyPhaseReporter(sink, "eval", every_s=0.05)
    with busy:
        with busy:  # a save inside an evaluation
            pass
        assert busy._thread is not None and busy._thread.is_alive()
        _wait_for(sink, 2)
    assert busy._thread is None
    after = len(sink.beats)
    time.sleep(0.2)  # four periods: a leftover thread would have reported
    assert len(sink.beats) == after


def test_a_failing_send_never_reaches_the_training_loop():
    def broken(phase: BusyPhase, since: float) -> None:
        raise OSError("agent gone")

    with BusyPhaseReporter(broken, "other", every_s=0.05) as busy:
        pass
    assert busy.sent == 0


def test_an_interval_below_the_floor_is_refused():
    with pytest.raises(ValueError, match="every_s 0.001"):
        BusyPhaseReporter(_Sink(), "eval", every_s=0.001)
