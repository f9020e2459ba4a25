"""Run Maven and say what it is doing: one line per downloaded jar or phase, a heartbeat.

A first ``trainguard kafka fetch`` downloads the broker's jars and Maven's own plugins, up
to 15 minutes on a slow mirror. :class:`FetchProgress` turns Maven's batch-mode output
(``Downloaded from central: URL (6.1 MB at 2.3 MB/s)``, ``--- plugin:goal ---``) into
short lines, and says "still running" with the elapsed time after ``heartbeat_s`` without
one; :func:`run_maven` feeds it while Maven runs. The clock is injected, so the reporter
is tested without waiting.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trainguard.errors import BrokerError

__all__ = ["DEFAULT_HEARTBEAT_S", "FetchProgress", "MavenRun", "run_maven"]

#: Seconds without a progress line before a "still running" line.
DEFAULT_HEARTBEAT_S = 10.0
#: Maven 3.9 says "Downloaded from central: URL (size ...)"; Maven 3.0-3.8 "Downloaded: URL".
_DOWNLOADED = re.compile(r"Downloaded(?: from [^:]+)?: (\S+)(?: \(([^,)]+?)(?: at [^)]*)?\))?")
#: "--- dependency:3.6.1:copy-dependencies (default-cli) @ kafka-broker ---"
_PHASE = re.compile(r"--- (\S+?)(?::[0-9][^:]*)?:(\S+) .*---")
_COPYING = re.compile(r"Copying (\S+\.jar) to ")
_TAIL_LINES = 30


class FetchProgress:
    """Summarizes Maven's output as it comes; ``emit`` gets each line to show."""

    def __init__(self, emit: Callable[[str], None], *,
                 clock: Callable[[], float] = time.monotonic,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> None:
        self._emit = emit
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self._started = clock()
        self._last_said = self._started
        #: Jars and other files (poms, metadata) downloaded, and jars copied, so far.
        self.jars = 0
        self.other_files = 0
        self.copied = 0

    @property
    def elapsed_s(self) -> float:
        """Seconds since the fetch started."""
        return self._clock() - self._started

    def line(self, text: str) -> None:
        """Take one line of Maven's output."""
        downloaded = _DOWNLOADED.search(text)
        if downloaded is not None:
            url, size = downloaded.group(1), downloaded.group(2)
            if not url.endswith(".jar"):
                self.other_files += 1  # poms and metadata: counted, shown in the heartbeat
                return
            self.jars += 1
            name = url.rsplit("/", 1)[-1]
            self._say(f"downloaded {name}" + (f" ({size.strip()})" if size else "")
                      + f" [{self.jars} jar{'s' if self.jars != 1 else ''}, "
                      f"{self.elapsed_s:.0f} s]")
            return
        phase = _PHASE.search(text)
        if phase is not None:
            self._say(f"maven {phase.group(1)}:{phase.group(2)} [{self.elapsed_s:.0f} s]")
            return
        if _COPYING.search(text) is not None:
            self.copied += 1
            if self.copied == 1:
                self._say(f"copying the jars into the cache [{self.elapsed_s:.0f} s]")

    def tick(self) -> None:
        """Call now and then: says "still running" once ``heartbeat_s`` passed in silence."""
        if self._clock() - self._last_said >= self._heartbeat_s:
            self._say(f"still running after {self.elapsed_s:.0f} s ({self.jars} jars and "
                      f"{self.other_files} other files downloaded so far)")

    def _say(self, text: str) -> None:
        self._last_said = self._clock()
        self._emit(text)


@dataclass(frozen=True)
class MavenRun:
    """How Maven ended: its exit status and the last lines it wrote."""

    returncode: int
    tail: str


def run_maven(cmd: Sequence[str], progress: FetchProgress, *, timeout_s: float,
              poll_s: float = 1.0) -> MavenRun:
    """Run ``cmd``, feeding each output line to ``progress``; raise BrokerError on timeout."""
    proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True,
                              name="maven-output")
    reader.start()
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(f"'{cmd[0]}' did not finish fetching Kafka jars within "
                                  f"{timeout_s:g}s")
            try:
                text = lines.get(timeout=min(poll_s, remaining))
            except queue.Empty:
                progress.tick()
                continue
            if text is None:
                break
            tail.append(text)
            progress.line(text)
            progress.tick()
        return MavenRun(proc.wait(), "\n".join(tail))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Move Maven's output lines into ``lines``; ``None`` once it closed its output."""
    assert proc.stdout is not None
    with proc.stdout:
        for text in proc.stdout:
            lines.put(text.rstrip("\n"))
    lines.put(None)
