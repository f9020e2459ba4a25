"""Linux inotify through ctypes: which files were closed after writing, or moved in.

The standard library has no inotify; libc's three calls (``inotify_init1``,
``inotify_add_watch``, ``inotify_rm_watch``) and ``read`` on the descriptor are all it
takes. Watches are per directory, not recursive: the caller adds one for each directory
it cares about, including new ones (``IN_CREATE | IN_ISDIR``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import select
import struct
import sys
from dataclasses import dataclass
from typing import Final

__all__ = [
    "IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_DELETE_SELF", "IN_IGNORED", "IN_ISDIR",
    "IN_MOVED_FROM", "IN_MOVED_TO",
    "IN_MOVE_SELF", "IN_Q_OVERFLOW", "Inotify", "InotifyEvent", "inotify_available",
]

IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_ISDIR: Final = 0x40000000
#: What the witness watches: files closed after writing or renamed in or out, entries
#: created or deleted, and the watched directory itself going away.
WATCH_MASK: Final = (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE
                     | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    """One event: the watch it came from, its mask, and the entry's name (may be empty)."""

    wd: int
    mask: int
    name: str


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    if not hasattr(libc, "inotify_init1"):
        return None
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return libc


def inotify_available() -> bool:
    """True where libc offers inotify (Linux)."""
    return _libc() is not None


class Inotify:
    """One inotify instance: add directory watches, read their events."""

    def __init__(self) -> None:
        libc = _libc()
        if libc is None:
            raise OSError(errno.ENOSYS, "inotify is not available on this platform")
        self._libc = libc
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1 failed: {os.strerror(err)}")
        self.fd: int = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def add(self, path: str) -> int:
        """Watch directory ``path``; return its watch descriptor.

        ``OSError`` names the reason (``ENOSPC``: ``fs.inotify.max_user_watches`` is used up).
        """
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path!r} failed: {os.strerror(err)}")
        return int(wd)

    def read(self, timeout_s: float) -> list[InotifyEvent]:
        """The events that arrive within ``timeout_s`` (all those already queued)."""
        if not self._poll.poll(max(0, int(timeout_s * 1000))):
            return []
        events: list[InotifyEvent] = []
        while True:
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return events
            offset = 0
            while offset + _HEADER.size <= len(buf):
                wd, mask, _cookie, length = _HEADER.unpack_from(buf, offset)
                start = offset + _HEADER.size
                raw = buf[start:start + length].split(b"\0", 1)[0]
                events.append(InotifyEvent(wd, mask, os.fsdecode(raw)))
                offset = start + length

    def close(self) -> None:
        """Release the instance (and every watch)."""
        if self.fd >= 0:
            self._poll.unregister(self.fd)
            os.close(self.fd)
            self.fd = -1
