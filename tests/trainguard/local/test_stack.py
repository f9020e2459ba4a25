"""LocalStack without a broker: its layout, its pager fallbacks, and what it stops.

``ensure_pipeline_topics`` is replaced by a recorder, the worker's interpreter by a stand-in
script, and Alertmanager by fakes; the real services run in the integration tests.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from trainguard.errors import TrainguardError
from trainguard.local import stack as stack_mod
from trainguard.local.alertmanager import AlertmanagerError, AlertmanagerNotFoundError
from trainguard.local.broker import LocalBroker
from trainguard.local.stack import LocalStack
from trainguard.local.worker import WorkerError


@pytest.fixture
def topics_made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    made: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(
        stack_mod, "ensure_pipeline_topics",
        lambda bootstrap, topics, **kw: made.append((bootstrap, list(topics.all()))))
    return made


def _no_alertmanager(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    class Failing:
        def __init__(self, *a: Any, **kw: Any) -> None:
            if isinstance(error, AlertmanagerNotFoundError):
                raise error

        def start(self) -> None:
            raise error

        def close(self) -> None:
            pass

    monkeypatch.setattr(stack_mod, "LocalAlertmanager", Failing)


def test_one_data_dir_holds_the_store_the_worker_state_and_its_log(tmp_path):
    s = LocalStack(tmp_path / "run", bootstrap="b:9092", topic_prefix="p1", app_id="a",
                   batch_within=0.3)
    run = (tmp_path / "run").resolve()
    assert s.broker is None and s.bootstrap == "b:9092"
    assert s.worker.url.path == run / "store"
    assert s.worker.data_dir == run / "worker"
    assert s.worker.log_path == run / "logs" / "worker.log"
    cmd = s.worker.command()
    assert cmd[cmd.index("--app-id") + 1] == "a" and cmd[cmd.index("--topic-prefix") + 1] == "p1"
    assert s.topics.samples.startswith("p1")


def test_a_busy_kafka_port_moves_the_broker_to_a_free_one(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = LocalStack(tmp_path, kafka_port=port)
    assert s.broker is not None and s.broker.port != port
    assert s.bootstrap == s.broker.bootstrap
    assert s.broker.data_dir == tmp_path.resolve() / "kafka"


def test_a_stack_without_a_worker_makes_the_topics_and_stops_only_the_pager(
        tmp_path, topics_made):
    lines: list[str] = []
    with LocalStack(tmp_path, bootstrap="b:9092", topic_prefix="p2", pager="receiver",
                    start_worker=False, out=lines.append) as s:
        assert s.receiver is not None and s.receiver.running and s.alertmanager is None
        assert lines == [f"pages go to local webhook receiver {s.receiver.url}"]
    assert topics_made == [("b:9092", list(s.topics.all()))]
    assert not s.receiver.running
    assert lines[1:] == []  # neither a worker nor a broker to stop


def test_auto_falls_back_to_the_receiver_when_alertmanager_is_not_installed(
        tmp_path, topics_made, monkeypatch):
    _no_alertmanager(monkeypatch, AlertmanagerNotFoundError("no binary"))
    with LocalStack(tmp_path, bootstrap="b:9092", pager="auto", start_worker=False) as s:
        assert s.alertmanager is None and s.receiver is not None
        assert "Alertmanager not installed" in s.pager_route


def test_auto_falls_back_when_alertmanager_fails_to_start(tmp_path, topics_made, monkeypatch):
    _no_alertmanager(monkeypatch, AlertmanagerError("port taken"))
    with LocalStack(tmp_path, bootstrap="b:9092", pager="auto", start_worker=False) as s:
        assert s.alertmanager is None and s.receiver is not None and s.receiver.running


def test_a_required_alertmanager_that_fails_stops_the_receiver_and_raises(
        tmp_path, topics_made, monkeypatch):
    _no_alertmanager(monkeypatch, AlertmanagerError("port taken"))
    s = LocalStack(tmp_path, bootstrap="b:9092", pager="alertmanager", start_worker=False)
    with pytest.raises(AlertmanagerError, match="port taken"), s:
        pass
    assert s.receiver is not None and not s.receiver.running
    assert topics_made == []


def test_a_worker_that_exits_early_fails_the_start_names_its_log_and_is_cleaned_up(
        tmp_path, topics_made):
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\necho "worker: bad config $*" >&2\nexit 3\n')
    fake.chmod(0o755)
    configs: list[Path] = []

    def config(stack: LocalStack) -> Path:
        path = stack.data_dir / "worker.toml"
        configs.append(path)
        return path

    lines: list[str] = []
    s = LocalStack(tmp_path, bootstrap="b:9092", worker_config=config, out=lines.append)
    s.worker.python = str(fake)
    with pytest.raises(WorkerError, match="exited with 3") as err, s:
        pass
    assert "worker: bad config" in str(err.value)
    assert f"--config {configs[0]}" in str(err.value)
    assert lines[0].startswith("starting stream worker → store chdb://")
    assert lines[-1] == "stream worker stopped"


def test_store_before_the_worker_serves_it_is_an_error(tmp_path):
    with pytest.raises(TrainguardError, match="not serving"):
        _ = LocalStack(tmp_path, bootstrap="b:9092").store


def test_a_worker_the_caller_started_itself_is_stopped_with_the_stack(tmp_path, topics_made):
    # The integration fixtures start the worker through stack.worker.start(); a close that
    # skipped it left workers spinning for hours after the session's broker was gone.
    import subprocess
    import sys

    lines: list[str] = []
    with LocalStack(tmp_path, bootstrap="b:9092", start_worker=False, out=lines.append) as s:
        s.worker.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        assert s.worker.alive()
    assert s.worker.proc.poll() is not None
    assert lines == ["stream worker stopped"]


def test_secure_mode_cannot_secure_bootstrap_servers_it_did_not_start(tmp_path):
    with pytest.raises(TrainguardError, match="cannot secure the given bootstrap servers"):
        LocalStack(tmp_path, bootstrap="b:9092", secure=True)


def test_a_secure_stack_grants_the_acls_and_runs_the_worker_as_the_worker_user(
        tmp_path, topics_made, monkeypatch):
    granted: list[tuple[str, str, list]] = []
    monkeypatch.setattr(stack_mod, "apply_acls", lambda bootstrap, security, rules, **kw:
                        granted.append((bootstrap, security.username, list(rules))))
    broker = LocalBroker(tmp_path / "kafka", 19092, 19093, secure=True)
    with LocalStack(tmp_path, broker=broker, topic_prefix="p3", app_id="w3",
                    start_worker=False) as s:
        assert s.secure and s.agent_security.username == "agent"
        [(bootstrap, user, rules)] = granted
        assert (bootstrap, user) == ("127.0.0.1:19092", "admin")
        assert {r.principal for r in rules} == {"User:agent", "User:worker"}
        assert any(r.resource == "group" and r.name == "w3" for r in rules)
        cmd = s.worker.command()
        assert cmd[cmd.index("--kafka-username") + 1] == "worker"
        assert broker.credentials.password("worker") not in " ".join(cmd)
    assert topics_made == [("127.0.0.1:19092", list(s.topics.all()))]


def test_a_secure_stack_keeps_its_broker_apart_from_a_plain_one(tmp_path):
    s = LocalStack(tmp_path, secure=True)
    assert s.broker is not None and s.broker.secure
    assert s.broker.data_dir == tmp_path.resolve() / "kafka-secure"
    assert LocalStack(tmp_path).agent_security.protocol == "PLAINTEXT"


def test_an_authenticated_stack_makes_a_private_fleet_secret_and_hands_it_to_the_worker(
        tmp_path, topics_made):
    import os

    from trainguard.schemas.auth import Verifier, header_map
    from trainguard.schemas.keyfiles import read_fleet_secrets

    s = LocalStack(tmp_path / "run", bootstrap="b:9092", start_worker=False, auth=True)
    cmd = s.worker.command()
    assert cmd[cmd.index("--fleet-secret-file") + 1] == str(s.fleet_secret_file)
    s.start()
    try:
        assert s.fleet_secret_file is not None and s.signer is not None
        assert os.stat(s.fleet_secret_file).st_mode & 0o777 == 0o600
        headers = s.signer.headers("n1", "t", b"k", b"v")
        verdict = Verifier(read_fleet_secrets(s.fleet_secret_file)).verify(
            "t", b"k", b"v", header_map(headers))
        assert verdict.node == "n1"
    finally:
        s.close()


def test_a_plain_stack_has_no_fleet_secret(tmp_path):
    s = LocalStack(tmp_path / "run", bootstrap="b:9092", start_worker=False)
    assert s.fleet_secret_file is None and "--fleet-secret-file" not in s.worker.command()
