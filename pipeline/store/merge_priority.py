"""The embedded store's background merges yield the CPU to the worker's own threads.

chdb runs ClickHouse's merges on threads of the worker process, named ``MergeMutate``. At
10,000 nodes a merge takes a whole core for 1–3 s at a time; on a 2-core machine that
saturates it, and the event loop, the worker's critical path, fell to 42–65 % of a core in
those seconds while ~30 % of the machine was idle the rest of the drain (BENCHMARKS.md,
issue #17, round 14). At a lower priority (a higher ``nice``) a merge takes the idle CPU
and gives way when the loop wants it: in real time at 5,000 nodes the anomalies reached
their topic at p99 0.98 and 0.76 s against 1.92 and 1.38 s (round 15). Merges still run
whenever a core is free, and a worker that keeps up leaves a good part of one free. A
ClickHouse server merges on its own machine and has its own setting
(``os_threads_nice_value_merge_mutate``).

Linux only: a thread's ``nice`` is set with ``setpriority`` on its task id, which no other
platform offers. Raising a thread's ``nice`` needs no privilege.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["MERGE_THREADS", "MergePriority", "renice_threads"]

log = logging.getLogger(__name__)

#: What ClickHouse names the threads of its merge and mutation executor.
MERGE_THREADS = frozenset({"MergeMutate"})


def renice_threads(names: Iterable[str], nice: int, *, tasks: Path = Path("/proc/self/task"),
                   get: Callable[[int, int], int] | None = None,
                   set_: Callable[[int, int, int], None] | None = None) -> tuple[int, int]:
    """Give this process's threads named ``names`` the ``nice`` value ``nice``.

    Returns (threads so named, threads changed now). A thread that ends meanwhile is
    skipped; a ``nice`` below the thread's needs privilege (``PermissionError``, raised).
    ``get``/``set_`` default to ``os.getpriority``/``os.setpriority``.
    """
    if not 0 <= nice <= 19:
        raise ValueError(f"nice must be within 0..19 (a lower priority), got {nice}")
    get = get or os.getpriority
    set_ = set_ or os.setpriority
    wanted = set(names)
    found = changed = 0
    for entry in tasks.iterdir():
        try:
            if (entry / "comm").read_text().strip() not in wanted:
                continue
            tid = int(entry.name)
            found += 1
            if get(os.PRIO_PROCESS, tid) != nice:
                set_(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # the thread ended, or a task that is not a number
    return found, changed


class MergePriority:
    """Keeps the embedded store's merge threads at ``nice`` (threads come and go: call often)."""

    def __init__(self, nice: int, *, names: Iterable[str] = MERGE_THREADS,
                 tasks: Path = Path("/proc/self/task")) -> None:
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be within 0..19 (a lower priority), got {nice}")
        self.nice, self._names, self._tasks = nice, frozenset(names), tasks
        #: Merge threads seen at the last call, and threads changed since the start.
        self.threads = self.changed = 0
        self.failed = False

    def apply(self) -> int:
        """Lower any merge thread not at ``nice`` yet; return the merge threads there are.

        Never raises: a platform without ``/proc`` task ids, or a worker whose own ``nice``
        is above ``nice`` without the privilege to go below it, is logged once and left as
        it is.
        """
        if self.failed or self.nice == 0:
            return self.threads
        try:
            self.threads, changed = renice_threads(self._names, self.nice, tasks=self._tasks)
        except OSError as exc:
            self.failed = True
            log.warning("store merge priority left as is nice=%d error=%s", self.nice, exc)
            return self.threads
        if changed:
            self.changed += changed
            log.debug("store merge threads reniced nice=%d changed=%d threads=%d",
                      self.nice, changed, self.threads)
        return self.threads
