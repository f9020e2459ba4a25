"""Which files of the checkpoint directories are ready to hash: written and closed.

Two ways to tell, the same answer:

* **inotify** (Linux): a file closed after writing (``IN_CLOSE_WRITE``) or renamed into a
  watched directory (``IN_MOVED_TO``, the write-then-rename pattern) is ready at once. New
  directories are watched as they appear (a configured one that does not exist yet, from
  the first scan that finds it); files that were there before their directory's watch
  (and everything after an event-queue overflow) go through the scan rule below.
* **scan** (elsewhere, or when a watch cannot be added): every ``scan_interval_s``, a file
  whose ``(size, mtime, ctime, inode)`` is the same in two scans in a row and differs from
  the version last handed out is ready.

Files present when the watcher starts are its baseline: they are not handed out until
they change. At most ``max_files`` files are tracked; beyond that new ones are left out
and counted (``untracked``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from trainguard.agents.collectors.file_hash import Identity, identity
from trainguard.agents.collectors.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
    inotify_available,
)

__all__ = ["ClosedFiles"]

log = logging.getLogger(__name__)


class ClosedFiles:
    """Files under ``dirs`` closed after writing, each version handed out once."""

    def __init__(
        self,
        dirs: Sequence[Path],
        *,
        use_inotify: bool = True,
        scan_interval_s: float = 5.0,
        exclude: Sequence[str] = (),
        max_files: int = 200_000,
        wait: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dirs = [str(d) for d in dirs]
        self._want_inotify = use_inotify
        self._scan_interval_s = scan_interval_s
        self._exclude = tuple(exclude)
        self._max_files = max_files
        self._wait = wait
        self._clock = clock
        self._notify: Inotify | None = None
        self._watched: dict[int, str] = {}
        #: path → the version last handed out (or seen at start).
        self._known: dict[str, Identity] = {}
        #: path → its version at the previous scan, waiting to be the same twice.
        self._unsettled: dict[str, Identity | None] = {}
        self._full_scan = True
        self._next_scan = -float("inf")
        #: Directories to watch once they exist (inotify needs them to).
        self._missing: list[str] = []
        self.untracked = 0

    @property
    def mode(self) -> str:
        """``"inotify"`` or ``"scan"``."""
        return "inotify" if self._notify is not None else "scan"

    def start(self) -> None:
        """Watch the directories (inotify where it works) and take the baseline."""
        if self._want_inotify and self._dirs and inotify_available():
            try:
                self._notify = Inotify()
                for d in self._dirs:
                    if os.path.isdir(d):
                        self._watch_tree(d, settle=False)
                    else:
                        self._missing.append(d)
            except OSError as exc:
                log.warning("inotify unavailable, scanning every %.1f s instead: %s",
                            self._scan_interval_s, exc)
                self._stop_notify()
        for path, ident in self._walk(self._dirs):
            self._remember(path, ident)
        self._full_scan = self._notify is None
        self._next_scan = self._clock() + self._scan_interval_s

    def stop(self) -> None:
        """Release the inotify instance."""
        self._stop_notify()

    def ready(self, timeout_s: float) -> list[Path]:
        """Files ready to hash, waiting up to ``timeout_s`` for some."""
        out: list[Path] = []
        if self._notify is not None:
            for ev in self._notify.read(timeout_s):
                out += self._event(ev.wd, ev.mask, ev.name)
        now = self._clock()
        if now >= self._next_scan:
            self._next_scan = now + self._scan_interval_s
            out += self._scan()
        if self._notify is None and not out:
            self._wait(timeout_s)
        return list(dict.fromkeys(out))  # a file closed twice in one read is hashed once

    def hashed(self, path: Path, ident: Identity) -> None:
        """Record the version of ``path`` that was hashed (it is not handed out again)."""
        self._remember(str(path), ident)

    def _event(self, wd: int, mask: int, name: str) -> list[Path]:
        if mask & IN_Q_OVERFLOW:
            log.warning("inotify queue overflowed: rescanning the checkpoint directories")
            self._full_scan = True
            return []
        parent = self._watched.get(wd)
        if mask & IN_IGNORED:
            gone = self._watched.pop(wd, None)
            if gone in self._dirs and gone not in self._missing:
                self._missing.append(gone)  # a configured directory removed: watch it anew
            return []
        if parent is None or not name or self._excluded(name):
            return []
        path = os.path.join(parent, name)
        if mask & (IN_DELETE | IN_MOVED_FROM):
            self._known.pop(path, None)
            self._unsettled.pop(path, None)
        elif mask & IN_ISDIR:
            if mask & (IN_CREATE | IN_MOVED_TO):
                self._watch_tree(path, settle=True)
        elif mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
            self._unsettled.pop(path, None)
            try:
                ident = identity(os.lstat(path))
            except OSError:
                return []
            if self._known.get(path) != ident:
                return [Path(path)]
        return []

    def _watch_tree(self, root: str, *, settle: bool) -> None:
        """Watch ``root`` and its directories; with ``settle``, scan the files found there."""
        assert self._notify is not None
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = [d for d in dirnames if not self._excluded(d)]
            try:
                self._watched[self._notify.add(dirpath)] = dirpath
            except FileNotFoundError:
                continue
            except OSError as exc:
                if not settle:
                    raise
                log.warning("cannot watch %s (%s): scanning every %.1f s instead", dirpath, exc,
                            self._scan_interval_s)
                self._stop_notify()
                self._full_scan = True
                return
        if settle:
            for path, _ in self._walk([root]):
                self._unsettled.setdefault(path, None)

    def _scan(self) -> list[Path]:
        """Hand out the files whose new version was the same in two scans in a row."""
        if self._notify is not None and self._missing:
            found = [d for d in self._missing if os.path.isdir(d)]
            self._missing = [d for d in self._missing if d not in found]
            for d in found:
                self._watch_tree(d, settle=True)
        if self._full_scan:
            current = dict(self._walk(self._dirs))
            for gone in [p for p in (*self._known, *self._unsettled) if p not in current]:
                self._known.pop(gone, None)
                self._unsettled.pop(gone, None)
            candidates: Iterator[tuple[str, Identity | None]] = iter(current.items())
        else:
            candidates = ((p, _stat(p)) for p in list(self._unsettled))
        self._full_scan = self._notify is None
        out: list[Path] = []
        for path, ident in candidates:
            if ident is None or self._known.get(path) == ident:
                self._unsettled.pop(path, None)
            elif self._unsettled.get(path) == ident:
                del self._unsettled[path]
                out.append(Path(path))
            elif path in self._unsettled or len(self._unsettled) < self._max_files:
                self._unsettled[path] = ident
        return out

    def _walk(self, roots: Sequence[str]) -> Iterator[tuple[str, Identity]]:
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not self._excluded(d)]
                for name in filenames:
                    if self._excluded(name):
                        continue
                    path = os.path.join(dirpath, name)
                    ident = _stat(path)
                    if ident is not None:
                        yield path, ident

    def _remember(self, path: str, ident: Identity) -> None:
        if path not in self._known and len(self._known) >= self._max_files:
            self.untracked += 1
            return
        self._known[path] = ident

    def _excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self._exclude)

    def _stop_notify(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
            self._watched.clear()


def _stat(path: str) -> Identity | None:
    """A regular file's identity; ``None`` for anything else or a file gone."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return identity(st) if stat.S_ISREG(st.st_mode) else None
