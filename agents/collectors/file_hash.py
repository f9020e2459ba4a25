"""Hashing files for the witness: SHA-256 of the bytes, streamed, within a MB/s budget.

SHA-256 of the file's bytes is the contract with the trainer kit: a trainer reports its
checkpoint shard's digest as ``hashlib.sha256(open(path, "rb").read()).hexdigest()`` (see
``StepReporter.checkpoint``), and the agent's witness hashes the same bytes.

The budget (a token bucket over bytes) is what bounds the witness's CPU: hashing runs at
about 1-2 GB/s on one core, so 200 MB/s costs some 10-20% of a core while a checkpoint is
being hashed, and nothing otherwise. A file that changes while it is hashed (size, times
or inode differ before and after) gives no digest: the next close or scan hashes it again.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DIGEST_NAME", "FileHash", "Hasher", "Identity", "identity"]

#: The digest the witness computes (and the trainer kit's contract).
DIGEST_NAME: Final = "sha256"
_CHUNK: Final = 1024 * 1024
#: The bucket's depth: a burst of at most this many seconds' budget.
_BURST_S: Final = 0.25

#: What tells one version of a file from another without reading it: the change time and
#: inode cannot be set back by a user the way the modification time can (``touch -d``).
Identity = tuple[int, int, int, int]


def identity(st: os.stat_result) -> Identity:
    """``(size, mtime_ns, ctime_ns, inode)`` of a stat result."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


@dataclass(frozen=True, slots=True)
class FileHash:
    """One file as the witness hashed it (``digest`` is ``None`` when ``skipped``)."""

    path: Path
    digest: str | None
    size: int
    ident: Identity
    skipped: str | None = None

    @property
    def changed_at(self) -> float:
        """The later of the file's modification and status-change times (epoch seconds)."""
        return max(self.ident[1], self.ident[2]) / 1e9


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


class Hasher:
    """Streams files through SHA-256 within a byte budget; counts what it could not hash.

    ``wait(seconds)`` pauses for the budget and returns True when the agent is stopping
    (a ``threading.Event.wait``), which abandons the file.
    """

    def __init__(
        self,
        *,
        mb_per_s: float,
        max_file_bytes: int,
        wait: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        chunk_bytes: int = _CHUNK,
    ) -> None:
        self._rate = mb_per_s * 1e6
        self.max_file_bytes = max_file_bytes
        self._wait = wait if wait is not None else _sleep
        self._clock = clock
        self._buf = bytearray(chunk_bytes)
        self._ready_at = -float("inf")
        self.hashed = 0
        self.bytes_hashed = 0
        #: Files not hashed, by reason: too_large, vanished, unreadable, not_a_file,
        #: changed_while_hashing, stopped.
        self.skipped: Counter[str] = Counter()
        #: Their sum, readable from another thread while the counter grows.
        self.skipped_total = 0

    def hash_file(self, path: Path) -> FileHash | None:
        """The file's SHA-256, or why it was skipped.

        ``too_large`` is returned (``digest`` ``None``); the other reasons are only counted
        and give ``None``: the file could not be hashed this time.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return self._skip("vanished")
        except OSError:
            return self._skip("unreadable")
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return self._skip("not_a_file")
            if before.st_size > self.max_file_bytes:
                self.skipped["too_large"] += 1
                self.skipped_total += 1
                return FileHash(path, None, before.st_size, identity(before), skipped="too_large")
            digest, read = self._stream(fd)
            if digest is None:
                return self._skip("stopped")
            after = os.fstat(fd)
        except OSError:
            return self._skip("unreadable")
        finally:
            os.close(fd)
        if identity(after) != identity(before) or read != before.st_size:
            return self._skip("changed_while_hashing")
        self.hashed += 1
        self.bytes_hashed += read
        return FileHash(path, digest, read, identity(before))

    def _stream(self, fd: int) -> tuple[str | None, int]:
        h = hashlib.sha256()
        view = memoryview(self._buf)
        read = 0
        while True:
            n = os.readv(fd, [view])
            if n == 0:
                return h.hexdigest(), read
            h.update(view[:n])
            read += n
            if self._spend(n):
                return None, read

    def _spend(self, n: int) -> bool:
        """Take ``n`` bytes from the budget, pausing when it is spent; True: stop."""
        if self._rate <= 0:
            return False
        now = self._clock()
        # The bucket refills at the rate and holds at most _BURST_S of it.
        self._ready_at = max(self._ready_at, now - _BURST_S) + n / self._rate
        ahead = self._ready_at - now
        return ahead > 0 and self._wait(ahead)

    def _skip(self, reason: str) -> FileHash | None:
        self.skipped[reason] += 1
        self.skipped_total += 1
        return None
