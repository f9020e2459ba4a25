"""WorkerProcess without a broker: its command line, its errors, and how it stops a process.

Processes that must keep running are a stand-in ``python`` (a shell script that sleeps);
the early-exit test runs the real ``python -m trainguard.cli worker`` with a bad option.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from trainguard.local.worker import WorkerError, WorkerProcess
from trainguard.pipeline.store import QueryResult, Secret


def _worker(tmp_path: Path, **kw: object) -> WorkerProcess:
    opts: dict[str, object] = {
        "topic_prefix": "tp",
        "data_dir": tmp_path / "state",
        "log_path": tmp_path / "logs" / "worker.log",
        **kw,
    }
    return WorkerProcess("127.0.0.1:1", f"chdb://{tmp_path / 'store'}", **opts)  # type: ignore[arg-type]


def _fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in interpreter: logs its arguments, then runs ``body`` (shell)."""
    path = tmp_path / "fake-python"
    path.write_text(f'#!/bin/sh\necho "fake worker $*"\n{body}\n')
    path.chmod(0o755)
    return str(path)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_the_command_carries_every_configured_option_in_order(tmp_path):
    config = tmp_path / "worker.toml"
    w = _worker(tmp_path, app_id="app-1", batch_within=0.3, config=config,
                extra_args=["--no-detect"], log_level="WARNING")
    cmd = w.command(["--partitions", "1"])
    assert cmd[:6] == [sys.executable, "-m", "trainguard.cli", "--log-level", "WARNING", "worker"]
    assert cmd[6:] == [
        "--bootstrap", "127.0.0.1:1", "--store", f"chdb://{(tmp_path / 'store').resolve()}",
        "--topic-prefix", "tp", "--data-dir", str(tmp_path / "state"),
        "--app-id", "app-1", "--batch-within", "0.3", "--config", str(config),
        "--no-detect", "--partitions", "1",
    ]


def test_the_command_leaves_out_options_that_are_not_set(tmp_path):
    cmd = _worker(tmp_path).command()
    assert "--app-id" not in cmd and "--batch-within" not in cmd and "--config" not in cmd
    assert cmd[cmd.index("--log-level") + 1] == "INFO"


def test_a_server_url_reaches_the_worker_as_given_and_keeps_its_password_for_reads(tmp_path):
    w = WorkerProcess("b:9092", "http://ch:8123/tg", topic_prefix="tp", data_dir=tmp_path,
                      log_path=tmp_path / "w.log", password=Secret("s3cret"))
    assert w.command()[w.command().index("--store") + 1] == "http://ch:8123/tg"
    assert w.url.password == Secret("s3cret") and not w.url.embedded


def test_a_worker_that_exits_at_start_raises_naming_the_bad_option_from_its_log(tmp_path):
    w = _worker(tmp_path, extra_args=["--no-such-option"])
    with pytest.raises(WorkerError) as err:
        w.start(timeout=60)
    message = str(err.value)
    assert "exited with 2" in message
    assert "--no-such-option" in message and "unrecognized arguments" in message
    assert str(w.log_path) in message
    assert not w.alive()


def test_a_worker_that_never_serves_its_store_times_out_on_the_injected_clock(tmp_path):
    clock = _Clock()
    w = _worker(tmp_path, python=_fake_python(tmp_path, "exec sleep 30"), clock=clock,
                sleep=clock.sleep)
    try:
        with pytest.raises(WorkerError, match="did not serve the store .* within 5s") as err:
            w.start(timeout=5)
        assert clock.now >= 5
        assert w.alive()
    finally:
        w.stop()
    assert f"log {w.log_path}" in str(err.value)


def test_stop_ends_a_running_worker_with_sigterm(tmp_path):
    w = _worker(tmp_path, python=_fake_python(tmp_path, "exec sleep 30"))
    w.spawn()
    assert w.alive()
    w.stop()
    assert not w.alive()
    assert w.proc is not None and w.proc.returncode == -signal.SIGTERM
    w.stop()  # idempotent


def test_stop_kills_a_worker_that_ignores_sigterm_after_the_timeout(tmp_path):
    body = "trap '' TERM\nwhile :; do sleep 0.1; done"
    w = _worker(tmp_path, python=_fake_python(tmp_path, body))
    w.spawn()
    # Let the script install its trap before the signal arrives.
    deadline = time.monotonic() + 10
    while "fake worker" not in w.log_tail() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    w.stop(timeout=0.5)
    assert w.proc is not None and w.proc.returncode == -signal.SIGKILL


def test_kill_sends_sigkill_and_forgets_the_reader(tmp_path):
    w = _worker(tmp_path, python=_fake_python(tmp_path, "exec sleep 30"))
    w.spawn()
    w.kill()
    assert w.proc is not None and w.proc.returncode == -signal.SIGKILL
    assert w.reader is None
    with pytest.raises(WorkerError, match="exited with -9"):
        w.check_alive()


def test_a_second_start_while_running_is_refused(tmp_path):
    w = _worker(tmp_path, python=_fake_python(tmp_path, "exec sleep 30"))
    w.spawn()
    try:
        with pytest.raises(WorkerError, match="already running"):
            w.spawn()
    finally:
        w.stop()


def test_reads_before_start_name_the_missing_start(tmp_path):
    w = _worker(tmp_path)
    with pytest.raises(WorkerError, match="never started"):
        w.check_alive()
    with pytest.raises(WorkerError, match="start"):
        w.query("SELECT 1")
    assert w.log_tail() == ""


class _CountingStore:
    def __init__(self, values: list[int]) -> None:
        self.values = values

    def query(self, sql: str) -> QueryResult:
        return QueryResult(columns=["n"], rows=[(self.values.pop(0),)])

    def close(self) -> None:
        pass


def test_wait_for_polls_until_the_value_is_reached(tmp_path):
    clock = _Clock()
    w = _worker(tmp_path, python=_fake_python(tmp_path, "exec sleep 30"), clock=clock,
                sleep=clock.sleep)
    w.spawn()
    try:
        w.reader = _CountingStore([0, 1, 3, 9])  # type: ignore[assignment]
        assert w.wait_for("SELECT n", 3, timeout=10) == 3
        assert clock.now == pytest.approx(0.6)
        w.reader = _CountingStore([0] * 100)  # type: ignore[assignment]
        assert w.wait_for("SELECT n", 3, timeout=1, poll=0.5) == 0
    finally:
        w.stop()
