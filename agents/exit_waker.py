"""Wakes the rank watch the moment a watched process exits, through pidfds (Linux >= 5.3).

A launcher reaps its dead workers quickly (torchrun checks them every 0.1 s), and once a
process is reaped its exit status is gone from ``/proc``. Polling every 0.25 s would miss
most of them; a pidfd becomes readable as soon as its process exits (while it is still a
zombie), so the watch reads the status at once. Where pidfds are unavailable (an old
kernel, a seccomp filter) the waker only sleeps, and the watch falls back to its interval.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Iterable

__all__ = ["ExitWaker"]

_log = logging.getLogger(__name__)


class ExitWaker:
    """Sleeps until a watched process exits, :meth:`interrupt` is called, or a timeout.

    Used by one thread (the watch's) except :meth:`interrupt`, which any thread may call.
    """

    def __init__(self, *, use_pidfd: bool = True) -> None:
        self._poller = select.poll()
        self._fds: dict[int, int] = {}  # pid -> pidfd (unregistered once it fired)
        self._fired: set[int] = set()
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._read_end, False)
        os.set_blocking(self._write_end, False)
        self._poller.register(self._read_end, select.POLLIN)
        #: False once pidfds turned out unavailable: the watch polls on its interval only.
        self.pidfds = use_pidfd and hasattr(os, "pidfd_open")

    def watch(self, pids: Iterable[int]) -> None:
        """Watch exactly ``pids`` from now on (pidfds opened and closed to match)."""
        wanted = {pid for pid in pids if pid > 0}
        for pid in [p for p in self._fds if p not in wanted]:
            self._close(pid)
        if not self.pidfds:
            return
        for pid in wanted - self._fds.keys():
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue  # gone already: the next look at /proc reports it
            except OSError as exc:  # ENOSYS, EPERM under seccomp: poll on the interval
                self.pidfds = False
                _log.warning("pidfd_open unavailable (%s): the rank watch sees exits on its "
                             "interval only, and may miss the exit status of ranks their "
                             "launcher reaps sooner", exc)
                return
            self._fds[pid] = fd
            self._poller.register(fd, select.POLLIN)

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True if a watched process exited meanwhile."""
        exited = False
        for fd, _ in self._poller.poll(max(0, int(timeout_s * 1000))):
            if fd == self._read_end:
                try:
                    os.read(self._read_end, 4096)
                except BlockingIOError:
                    pass
                continue
            exited = True
            # Readable for good once its process exited: stop polling it until released.
            self._poller.unregister(fd)
            self._fired.update(pid for pid, f in self._fds.items() if f == fd)
        return exited

    def interrupt(self) -> None:
        """Wake :meth:`wait` now (from any thread)."""
        try:
            os.write(self._write_end, b"x")
        except BlockingIOError:
            pass  # a wake-up is pending already

    def close(self) -> None:
        """Close every pidfd and the wake-up pipe."""
        for pid in list(self._fds):
            self._close(pid)
        os.close(self._read_end)
        os.close(self._write_end)

    def _close(self, pid: int) -> None:
        fd = self._fds.pop(pid)
        if pid not in self._fired:
            self._poller.unregister(fd)
        self._fired.discard(pid)
        os.close(fd)
