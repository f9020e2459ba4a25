"""A real trainer process for agent tests: reports through a real StepReporter on command.

The child reads one command per line on stdin and answers ``ok`` once done:
``step N`` reports step N, ``waiting N`` says it waits in collective N, ``bye REASON``
says goodbye, ``exit CODE`` exits with CODE. It exits 0 when stdin closes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import sys, time
from trainguard.agents.reporter import StepReporter
path, job, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
reporter = StepReporter(job, rank, 4, socket_path=path, node="n")
print("ready", flush=True)
for line in sys.stdin:
    cmd, arg = line.split()
    if cmd == "step":
        ok = reporter.report(int(arg), loss=1.5)
    elif cmd == "waiting":
        ok = reporter.event("waiting", step=3, since=time.time() - 1.0, collective=int(arg))
    elif cmd == "bye":
        ok = reporter.event("bye", reason=arg, step=3)
    elif cmd == "manifest":
        ok = reporter.manifest(arg, {"script:train.py": "ab" * 32, "version:torch": "2.5.1"})
    elif cmd == "exit":
        sys.exit(int(arg))
    print("ok" if ok else "dropped", flush=True)
"""


class Trainer:
    """A live child process reporting for ``(job, rank)`` on the step socket at ``path``.

    The test's :class:`subprocess.Popen` is not polled until :meth:`reap`, so an exited
    trainer stays a zombie with its exit status readable, as under a launcher.
    """

    def __init__(self, path: Path, job: str = "job-1", rank: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), job, str(rank)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.pid = self.proc.pid
        assert self._read() == "ready"

    def do(self, command: str) -> None:
        """Run one command; raise unless the reporter handed its datagram over."""
        self._write(command)
        assert self._read() == "ok", command

    def exit(self, code: int) -> None:
        """Make the trainer exit with ``code`` (it stays a zombie until :meth:`reap`)."""
        self._write(f"exit {code}")

    def reap(self, timeout: float = 10.0) -> int:
        """Collect the child's exit status (ending a zombie); a live one is told to exit."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        return self.proc.wait(timeout=timeout)

    def _write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()


def wait_for(predicate, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)
