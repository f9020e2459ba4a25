"""systemd's readiness and watchdog notifications (``sd_notify``) in a few lines of stdlib.

A ``Type=notify`` unit sets ``NOTIFY_SOCKET``: a Unix datagram socket (a path, or ``@name``
in the abstract namespace) to which the service sends newline-separated ``KEY=VALUE``
lines: ``READY=1`` once started, ``STOPPING=1`` on the way out, ``STATUS=...`` for
``systemctl status``, and ``WATCHDOG=1`` at least every ``WatchdogSec=`` (systemd passes it
as ``WATCHDOG_USEC``), else systemd kills the service and restarts it. The agent pings from
its tick loop, so a tick stuck in a hung NVML call stops the pings and gets it restarted;
the stream worker pings from a timer of its event loop, so a blocked loop does.

Without ``NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call is a no-op.
A failed send is logged and never raised: the notifications must not stop the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from trainguard import envvars

__all__ = ["SdNotifier"]

log = logging.getLogger(__name__)


class SdNotifier:
    """Sends notifications to systemd's ``NOTIFY_SOCKET``; a no-op without one."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = _socket_address(address) if address else None
        #: Seconds between watchdog pings: half of ``WatchdogSec=``, as sd_watchdog_enabled(3)
        #: advises; ``None`` when no watchdog is asked for.
        self.interval_s: float | None = None
        if watchdog_usec and self._address is not None:
            self.interval_s = watchdog_usec / 2e6
        self._clock = clock
        self._last_ping: float | None = None
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, pid: int | None = None) -> SdNotifier:
        """The notifier systemd asks for in ``environ`` (read by the entry point)."""
        address = environ.get(envvars.NOTIFY_SOCKET) or None
        usec = None
        watchdog_pid = environ.get(envvars.WATCHDOG_PID)
        mine = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
        raw = environ.get(envvars.WATCHDOG_USEC, "")
        if mine and raw.isdigit() and int(raw) > 0:
            usec = int(raw)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """True when running under a ``Type=notify`` unit."""
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True if it was sent."""
        if self._address is None:
            return False
        data = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the tick loop: a full queue fails this send (counted).
                sock.sendto(data, socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            self.failed += 1
            log.warning("systemd notification failed socket=%r lines=%s error=%s",
                        self._address, ",".join(line.split("=", 1)[0] for line in lines), exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd the service is up (``READY=1``)."""
        return self.notify("READY=1", *((f"STATUS={status}",) if status else ()))

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Ping the watchdog if half of ``WatchdogSec`` passed since the last ping."""
        if self.interval_s is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")


def _socket_address(address: str) -> str | bytes | None:
    """``@name`` is the abstract namespace (a leading NUL on the wire); else a path."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    if address.startswith("/"):
        return address
    # e.g. systemd's vsock: form, for virtual machines; the agent runs on the host.
    log.warning("NOTIFY_SOCKET %r is neither an absolute path nor @abstract; systemd "
                "notifications are off", address)
    return None
