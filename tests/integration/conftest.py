"""Fixtures for end-to-end tests: a real stream worker process over the real broker and chdb."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from trainguard.pipeline.store import RemoteReadStore, StoreUrl, owner_reader


class WorkerProcess:
    """``trainguard worker`` in a subprocess, owning its own chdb directory."""

    def __init__(self, bootstrap: str, prefix: str, store_dir: Path, log_path: Path):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.store_url = StoreUrl.parse(f"chdb://{store_dir}")
        self.log_path = log_path
        self.app_id = f"tg-test-{prefix}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: RemoteReadStore | None = None

    def start(self, timeout: float = 90, extra_args: list[str] | None = None) -> None:
        cmd = [
            sys.executable,
            "-m",
            "trainguard.cli",
            "--log-level",
            "INFO",
            "worker",
            "--bootstrap",
            self.bootstrap,
            "--store",
            str(self.store_url),
            "--topic-prefix",
            self.prefix,
            "--app-id",
            self.app_id,
            "--data-dir",
            str(self.log_path.parent / "worker-state"),
            "--batch-within",
            "0.3",
            *(extra_args or []),
        ]
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited early:\n{self.log()}"
            # Only this process counts: a killed predecessor leaves its owner.json behind.
            self.reader = owner_reader(self.store_url, pid=self.proc.pid)
            if self.reader is not None:
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no final commit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.reader = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def query(self, sql: str):
        # Never open the chdb directory from the test process: chdb binds a process to
        # one directory for its lifetime, and the in-process store tests need theirs.
        assert self.reader is not None, "worker is not running"
        return self.reader.query(sql)

    def scalar(self, sql: str) -> int:
        return int(self.query(sql).scalar())

    def wait_for(self, sql: str, expected: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        value = -1
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"worker died:\n{self.log()}"
            value = self.scalar(sql)
            if value >= expected:
                return value
            time.sleep(0.3)
        return value

    def log(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture
def worker_process(bootstrap, tmp_path):
    """A factory-started worker with a unique topic prefix and its own chdb directory."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    worker = WorkerProcess(bootstrap, prefix, tmp_path / "store", tmp_path / "worker.log")
    yield worker
    worker.stop()
