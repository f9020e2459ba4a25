"""Step records handed to the agent from a thread of their own, off the training loop.

Sending a datagram is a system call that wakes the agent; on a busy node the kernel may
run the agent on the training thread's core before the sender resumes, which cost the
loop 50 µs to over 1 ms per step on a loaded 2-core machine (BENCHMARKS.md). The training
thread only queues the step's values (well under a microsecond); a daemon thread builds
and sends the record, in order. :meth:`Sender.stop` (from ``bye``) sends what is queued
before returning, so ``bye`` still follows the last step on the wire.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Final

__all__ = ["Sender"]

_log = logging.getLogger(__name__)

#: How long :meth:`Sender.stop` waits for the thread before sending the rest itself.
STOP_WAIT_S: Final = 2.0
_STOP: Final = object()


class Sender:
    """Calls ``send(item)`` for each queued item, in order, on a daemon thread."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()
        #: Items whose send raised (logged once).
        self.errors = 0

    def put(self, item: Any) -> None:
        """Queue ``item`` (sends it here and now once stopped)."""
        if self._stopped:
            self._call(item)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trainguard-send",
                                            daemon=True)
            self._thread.start()
        self._queue.put(item)

    def stop(self) -> None:
        """Send everything queued, then stop the thread (later items are sent inline)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self._queue.put(_STOP)
            thread.join(timeout=STOP_WAIT_S)
            if thread.is_alive():  # stuck (e.g. on a lock this thread holds): send the rest
                _log.warning("trainguard sender thread did not stop in %.1fs; sending the "
                             "queued steps inline", STOP_WAIT_S)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self._call(item)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._call(item)

    def _call(self, item: Any) -> None:
        try:
            self._send(item)
        except Exception:  # a step's record must never take the thread down
            self.errors += 1
            if self.errors == 1:
                _log.exception("trainguard step record not sent (further failures counted)")
