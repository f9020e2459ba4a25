"""A raw datagram receiver standing in for the agent's step socket.

The agent's intake on this branch does not yet accept ``event``/``manifest`` datagrams
(the agent part adds that), so tests of those read the wire itself: the exact
``StepDatagram`` the reporter sends.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import msgspec

from trainguard.agents.reporter import StepDatagram


class Receiver:
    """Binds a Unix datagram socket and decodes what arrives, on a reading thread.

    The thread keeps the kernel's small datagram queue (``max_dgram_qlen``) from filling
    up, as the agent's intake does.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.02)
        self.datagrams: list[StepDatagram] = []
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(1 << 17)
            except (TimeoutError, OSError):
                continue
            self.datagrams.append(msgspec.json.decode(data, type=StepDatagram))
            self._last = time.monotonic()

    def collect(self, settle_s: float = 0.1) -> list[StepDatagram]:
        """Everything received, once nothing new arrived for ``settle_s``."""
        start = time.monotonic()
        while time.monotonic() - max(self._last, start) < settle_s:
            time.sleep(0.01)
        return list(self.datagrams)

    def steps(self):
        return [d.step for d in self.collect() if d.step is not None]

    def events(self):
        return [d.event for d in self.collect() if d.event is not None]

    def manifests(self):
        return [d.manifest for d in self.collect() if d.manifest is not None]

    def checkpoints(self):
        return [d.checkpoint for d in self.collect() if d.checkpoint is not None]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
