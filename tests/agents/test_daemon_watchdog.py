"""The agent under a Type=notify unit: READY=1 once up, watchdog pings from the tick loop."""

import socket
import threading
import time

import pytest

from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.config import AgentConfig, KafkaProducerSettings
from trainguard.agents.daemon import NodeAgent
from trainguard.agents.runtime import run_agent
from trainguard.sd_notify import SdNotifier


class NullTransport:
    def send(self, topic, key, value):
        pass

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


class RecordingNotifier(SdNotifier):
    """Counts watchdog pings; sets ``stop`` at the ``limit``-th one, if given."""

    def __init__(self, stop=None, limit=None):
        super().__init__(None)
        self.interval_s = 0.01
        self.pings = 0
        self._stop_event, self._limit = stop, limit

    def watchdog(self):
        self.pings += 1
        if self.pings == self._limit:
            self._stop_event.set()
        return True


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(10)
    yield str(tmp_path / "notify.sock"), sock
    sock.close()


def _config(tmp_path=None, **kw):
    fields = {"kafka": KafkaProducerSettings(bootstrap="127.0.0.1:9092"), "cluster": "c1",
              "node": "node-a", "sim_gpus": 1, "backend": "simulated"}
    if tmp_path is not None:
        fields["spool_dir"] = tmp_path / "spool"
    return AgentConfig(**{**fields, **kw})


def test_the_tick_loop_pings_the_watchdog_before_every_wait():
    notifier = RecordingNotifier()
    agent = NodeAgent(_config(interval_s=0.1, heartbeat_interval_s=1.0),
                      SimulatedGpus("node-a", 1), NullTransport(), notifier=notifier)
    assert agent.run(threading.Event(), max_ticks=3) == 3
    assert notifier.pings >= 4  # the wait for the first boundary, and one after each tick


def test_the_pings_reach_the_notify_socket(listener):
    address, sock = listener
    notifier = SdNotifier(address, watchdog_usec=1_000_000)
    agent = NodeAgent(_config(interval_s=0.1, heartbeat_interval_s=1.0),
                      SimulatedGpus("node-a", 1), NullTransport(), notifier=notifier)
    agent.run(threading.Event(), max_ticks=2)
    assert notifier.sent >= 1 and notifier.failed == 0
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_a_wait_longer_than_the_watchdog_period_keeps_pinging():
    stop = threading.Event()
    notifier = RecordingNotifier(stop, limit=3)
    agent = NodeAgent(_config(interval_s=3600, heartbeat_interval_s=3600),
                      SimulatedGpus("node-a", 1), NullTransport(), notifier=notifier)
    # An hour-long interval is cut into watchdog periods: the pings go on until stopped.
    agent._wait(stop, time.monotonic() + 3600)
    assert notifier.pings == 3 and stop.is_set()


def test_run_agent_says_ready_pings_and_says_stopping(tmp_path, listener, monkeypatch):
    address, sock = listener
    notifier = SdNotifier(address, watchdog_usec=200_000)  # a ping every 0.1 s at most

    def unreachable(**_settings):
        raise OSError("connection refused")

    # Kafka is down: the sender spools; the loop and its notifications do not wait on it.
    monkeypatch.setattr("kafka.KafkaProducer", unreachable)
    config = _config(tmp_path, interval_s=0.1, heartbeat_interval_s=1.0)
    run_agent(config, threading.Event(), max_ticks=2, drain_timeout=0, notifier=notifier)
    sock.settimeout(0)
    received = []
    while True:
        try:
            received.append(sock.recv(4096))
        except BlockingIOError:
            break
    assert received[0] == b"READY=1\nSTATUS=node=node-a gpus=1"
    assert received[-1] == b"STOPPING=1"
    assert b"WATCHDOG=1" in received[1:-1]
