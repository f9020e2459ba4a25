"""run_agent wires the rank watch to its step socket: a killed trainer becomes a sent event."""

from __future__ import annotations

import os
import signal
import threading

from tests.agents.test_daemon_watchdog import _config
from tests.agents.trainer_proc import Trainer, wait_for
from trainguard.agents.runtime import run_agent


def _unreachable(**_settings):
    raise OSError("connection refused")


def test_run_agent_reports_a_killed_rank_of_its_step_socket(tmp_path, sock_path, monkeypatch):
    monkeypatch.setattr("kafka.KafkaProducer", _unreachable)  # Kafka down: records spool
    config = _config(tmp_path, interval_s=0.1, heartbeat_interval_s=1.0,
                     steps_socket=sock_path, rank_watch_interval_s=0.05,
                     metrics_textfile_dir=tmp_path)
    stop, ready = threading.Event(), threading.Event()
    agents = []

    def on_ready(agent):
        agents.append(agent)
        ready.set()

    thread = threading.Thread(target=run_agent, args=(config, stop),
                              kwargs={"drain_timeout": 0, "on_ready": on_ready})
    thread.start()
    trainer = None
    try:
        assert ready.wait(30)
        [agent] = agents
        trainer = Trainer(sock_path, rank=3)
        trainer.do("step 1")
        wait_for(lambda: agent.steps_sent == 1)
        os.kill(trainer.pid, signal.SIGKILL)
        wait_for(lambda: agent.rank_events_sent == 1)
    finally:
        stop.set()
        thread.join(30)
        if trainer is not None:
            trainer.reap()
    assert not thread.is_alive()
    # The last heartbeat counts the event (Prometheus textfile written after each one).
    metrics = (tmp_path / "trainguard_agent.prom").read_text()
    assert 'trainguard_agent_rank_events_total{cluster="c1",node="node-a"} 1.0' in metrics
    assert 'trainguard_agent_rank_events_dropped_total{cluster="c1",node="node-a"} 0.0' in metrics
