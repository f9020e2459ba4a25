"""A real trainer's events reach the agent's transport: reporter → intake / watch → tick.

The trainer is a real child process with a real StepReporter; the intake and the rank watch
run their own threads and, in the kill test, so does the agent's tick loop, all at their
default intervals.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from tests.agents.test_daemon import _config
from tests.agents.trainer_proc import Trainer, wait_for
from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.daemon import NodeAgent
from trainguard.agents.intake import StepIntake
from trainguard.agents.rank_watch import RankWatch
from trainguard.schemas.codec import RecordDecoder
from trainguard.schemas.records import StepBatch

log = logging.getLogger(__name__)


class TimedTransport:
    """An in-memory Transport that notes when each message was handed to it."""

    def __init__(self):
        self.sent = []
        self._lock = threading.Lock()

    def send(self, topic, key, value):
        with self._lock:
            self.sent.append((time.monotonic(), topic, key, value))

    def step_batches(self):
        with self._lock:
            sent = list(self.sent)
        return [(at, RecordDecoder(StepBatch).decode(v)) for at, t, _, v in sent
                if t == "tg.steps.v1"]

    def close(self, timeout=None):
        pass


@pytest.fixture
def node(sock_path):
    """A running intake and rank watch (default interval) feeding a NodeAgent."""
    transport = TimedTransport()
    config = _config()
    with StepIntake(sock_path) as intake:
        watch = RankWatch(intake.bindings, intake.rank_reports.add_event,
                          interval_s=config.rank_watch_interval_s)
        agent = NodeAgent(config, SimulatedGpus("node-a", 1), transport,
                          step_sources=[intake.drain], claim_sources=[intake.drain_claims],
                          rank_sources=[intake.rank_reports.drain])
        watch.start()
        try:
            yield intake, agent, transport
        finally:
            watch.stop()


def _events(transport):
    return [(at, e) for at, b in transport.step_batches() for e in b.events]


def test_a_sigkilled_trainer_reaches_the_transport_as_exited_with_signal_9(node):
    intake, agent, transport = node
    trainer = Trainer(intake.socket_path, rank=1)
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,))
    try:
        trainer.do("step 1")
        wait_for(lambda: intake.steps_received == 1)
        loop.start()
        wait_for(lambda: any(b.steps for _, b in transport.step_batches()))
        killed_at = time.monotonic()
        os.kill(trainer.pid, signal.SIGKILL)
        wait_for(lambda: _events(transport), timeout=15.0)
    finally:
        stop.set()
        if loop.is_alive():
            loop.join()
        trainer.reap()
    [(sent_at, event)] = _events(transport)
    assert event.event == "exited" and event.rank == 1 and event.pid == trainer.pid
    assert event.signal == 9 and event.exit_code is None
    # Measured, not asserted: rank watch interval + time to the next agent tick.
    latency = sent_at - killed_at
    log.warning("kill -9 to transport: %.3f s (rank_watch_interval_s=%s interval_s=%s)",
                latency, agent.config.rank_watch_interval_s, agent.config.interval_s)
    print(f"\nkill -9 to transport: {latency:.3f} s")


def test_waiting_and_bye_reach_the_step_batch_with_the_kernels_pid(node):
    intake, agent, transport = node
    trainer = Trainer(intake.socket_path, rank=2)
    try:
        trainer.do("step 3")
        trainer.do("waiting 17")
        trainer.do("bye finished")
        wait_for(lambda: intake.rank_reports.events_received == 2)
        agent.tick(1_795_000_100.0)
        trainer.reap()  # exits 0 after saying bye: the watch still reports the exit
        wait_for(lambda: intake.rank_reports.events_received == 3)
        agent.tick(1_795_000_101.0)
    finally:
        trainer.reap()
    batches = [b for _, b in transport.step_batches()]
    assert [len(b.steps) for b in batches] == [1, 0, 0]
    events = [e for b in batches for e in b.events]
    assert [(e.event, e.reason, e.collective) for e in events] == [
        ("waiting", None, 17), ("bye", "finished", None), ("exited", None, None)]
    assert {e.pid for e in events} == {trainer.pid} and {e.rank for e in events} == {2}
    assert all(b.job_id == "job-1" and b.node == "node-a" for b in batches)
