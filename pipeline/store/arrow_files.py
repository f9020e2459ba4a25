"""Arrow blocks handed to the embedded engine as files, so that it reads them without the GIL.

chdb's ``Python()`` table function reads an Arrow table in place, but its threads take
the GIL to do it: an insert then waits for the event loop at every handover and holds
the GIL against it while reading. Written as an Arrow IPC stream (C++, no GIL) to a
private directory in memory (``/dev/shm`` where there is one) and read back by the
engine's own ``file()`` table function, the same block costs the GIL nothing past the
call. The directory is this process's alone (mode 0700, removed on close, named with the
pid so that the next worker removes what a killed one left: :func:`sweep_dead`); each
block is a new file, removed after its insert. A block that cannot be written (a full or read-only
``/dev/shm``) raises :class:`BlockWriteError`: the caller then inserts it another way.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from trainguard.errors import StoreError

__all__ = ["ArrowFiles", "BlockWriteError", "block_dir", "sweep_dead"]

log = logging.getLogger(__name__)

#: Where block directories go when it is a writable directory: memory, never disk.
SHM = Path("/dev/shm")
#: Paths ``file()`` takes literally: no quote, backslash or glob characters (``*?{}[]``).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./-]+")
_PREFIX = "trainguard-arrow-"
_OWNED = re.compile(_PREFIX + r"(\d+)-")
#: A dead owner's directory untouched this long is removed (seconds). The age guards a
#: live worker in another pid namespace sharing the directory, whose pid looks dead here.
STALE_S = 600.0


class BlockWriteError(StoreError):
    """An Arrow block could not be written to its directory."""


def block_dir(shm: Path = SHM) -> Path | None:
    """Where block directories can go: ``shm`` if writable, else the system's temp dir.

    ``None`` when that path has characters ``file()`` would read as a pattern or quote.
    """
    base = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else Path(
        tempfile.gettempdir())
    return base if _PLAIN_PATH.fullmatch(str(base)) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def sweep_dead(base: Path, now: float | None = None) -> int:
    """Remove block directories in ``base`` left by dead processes; return how many.

    Only this user's directories whose pid is gone and that were untouched for
    :data:`STALE_S` (a SIGKILLed worker cannot remove its own, and /dev/shm is memory).
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        match = _OWNED.match(entry.name)
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (match is None or not entry.is_dir(follow_symlinks=False)
                or info.st_uid != os.getuid() or now - info.st_mtime < STALE_S
                or _alive(int(match.group(1)))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
        log.warning("removed a dead worker's Arrow block directory path=%s", entry.path)
    return removed


class ArrowFiles:
    """A private directory of Arrow IPC block files; :meth:`block` writes one."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._dir: Path | None = None
        self._names = itertools.count()
        self._lock = threading.Lock()
        #: Blocks that could not be written (each then went another way).
        self.failures = 0

    @contextmanager
    def block(self, data: pa.Table) -> Iterator[str]:
        """Write ``data`` to a new file; yield its path, and remove the file after."""
        path = self._directory() / f"block-{next(self._names)}.arrows"
        try:
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, data.schema) as w:
                w.write_table(data)
        except (OSError, pa.ArrowException) as exc:
            path.unlink(missing_ok=True)
            raise BlockWriteError(f"cannot write an Arrow block to {path}: {exc}") from None
        try:
            yield str(path)
        finally:
            path.unlink(missing_ok=True)

    def _directory(self) -> Path:
        with self._lock:
            if self._dir is None:
                sweep_dead(self._base)
                try:
                    self._dir = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-",
                                                      dir=self._base))
                except OSError as exc:
                    raise BlockWriteError(
                        f"cannot make an Arrow block directory in {self._base}: {exc}"
                    ) from None
                log.info("arrow block directory path=%s", self._dir)
            return self._dir

    def close(self) -> None:
        """Remove the directory and any block left in it."""
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
