"""The rank watch: the agent's own eyes on the processes bound to a job's ranks.

In a real job a dead or hung rank stops its peers inside the next collective, so no peer
keeps stepping and "a rank went missing" is never seen in the steps. The agent, though,
knows which process holds each (job, rank) (:class:`~trainguard.agents.claims.RankBindings`,
from the kernel's credentials on the step socket) and can look at it in ``/proc`` without
trusting any trainer code. Every ``interval_s`` (0.25 s by default, on its own thread),
and at once when one of them exits (a pidfd wakes it, :mod:`.exit_waker`), it reads
``/proc/<pid>/stat`` of each bound process and reports, as
:class:`~trainguard.schemas.ranks.RankEvent`:

* ``exited``: the process is a zombie, or gone, or its pid now belongs to a process with
  another start time. While it is a zombie (its parent, the launcher, has not reaped it
  yet) its exit status is read from field 52 and decoded into ``exit_code`` or
  ``signal``; once reaped, both are ``None``. The rank's binding is then released, so a
  restarted rank's new process binds at once (a zombie would otherwise hold it).
* ``stopped``: its state is ``T`` (stopped by a signal) or ``t`` (stopped by a tracer),
  once per stop;
* ``resumed``: running again after a reported stop.

A process that said ``bye finished`` and exits still yields ``exited``: the worker decides
what is benign. The kernel shows field 52 only to a reader allowed to trace the process:
the agent trusts it when it has ``CAP_SYS_PTRACE`` or runs as the process's user and
group, else reports no status (any other reader sees 0, which would read as a clean
exit; root in a container without ``CAP_SYS_PTRACE`` is such a reader). A process that
``/proc`` hides (mounted with ``hidepid``) but that still exists is not reported at all
(counted in ``hidden``, logged).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from trainguard.agents.claims import Binding, RankBindings, stat_fields
from trainguard.agents.exit_waker import ExitWaker
from trainguard.agents.ratelimit import LogLimiter
from trainguard.schemas.ranks import RankEvent

__all__ = ["ProcStat", "RankWatch", "may_trace_all", "pid_exists", "read_proc_stat"]

_log = logging.getLogger(__name__)

# /proc/<pid>/stat fields (1-based, man 5 proc) after the command name.
_STATE, _START, _EXIT_CODE = 3, 22, 52
_STOPPED: Final = frozenset("Tt")
_DEAD: Final = frozenset("ZX")
_CAP_SYS_PTRACE: Final = 19
#: Exits remembered so a late datagram of a dead process, binding it again, is not a
#: second ``exited``.
_MAX_EXITED: Final = 4096

#: Called with the job and each event the watch sees.
EventSink = Callable[[str, RankEvent], object]


@dataclass(frozen=True, slots=True)
class ProcStat:
    """What the watch reads of one process."""

    state: str
    start: int
    #: Exit status in ``waitpid`` form (field 52); ``None`` on kernels before 3.5.
    exit_status: int | None


def read_proc_stat(pid: int, proc: Path = Path("/proc")) -> ProcStat | None:
    """State, start time and exit status of process ``pid``; ``None`` if it is gone."""
    fields = stat_fields(pid, proc)
    if fields is None:
        return None
    try:
        state = fields[_STATE - 3].decode("ascii")
        start = int(fields[_START - 3])
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    try:
        exit_status: int | None = int(fields[_EXIT_CODE - 3])
    except (IndexError, ValueError):
        exit_status = None
    return ProcStat(state, start, exit_status)


def pid_exists(pid: int) -> bool:
    """True if a process ``pid`` exists, even one ``/proc`` hides from us (``hidepid``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def may_trace_all(proc: Path = Path("/proc")) -> bool:
    """True if this process has ``CAP_SYS_PTRACE`` (it may read anyone's exit status)."""
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_PTRACE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _decode_status(status: int | None) -> tuple[int | None, int | None]:
    """``(exit_code, signal)`` from a ``waitpid`` status."""
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


class RankWatch:
    """Polls the processes bound to ranks and reports exits, stops and resumes.

    ``sink(job, event)`` receives each event (the step intake's
    :class:`~trainguard.agents.rank_events.RankReports`). ``proc``, ``wall`` (the event
    clock), who we are to the kernel (``euid``, ``egid``, ``trace_all``: whose exit statuses
    it shows us), ``read`` and ``exists`` are injectable.
    """

    def __init__(
        self,
        bindings: RankBindings,
        sink: EventSink,
        *,
        interval_s: float = 0.25,
        proc: Path = Path("/proc"),
        wall: Callable[[], float] = time.time,
        euid: int | None = None,
        egid: int | None = None,
        trace_all: bool | None = None,
        read: Callable[[int, Path], ProcStat | None] = read_proc_stat,
        exists: Callable[[int], bool] = pid_exists,
        pidfd: bool = True,
        warn_interval_s: float = 10.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s {interval_s}: expected > 0")
        self._bindings, self._sink = bindings, sink
        self.interval_s = interval_s
        self._proc, self._wall, self._read, self._exists = proc, wall, read, exists
        self._euid = os.geteuid() if euid is None else euid
        self._egid = os.getegid() if egid is None else egid
        self._trace_all = may_trace_all(proc) if trace_all is None else trace_all
        self._limiter = LogLimiter(warn_interval_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pidfd = pidfd
        self._waker: ExitWaker | None = None
        # Bound processes (job, rank, pid) seen stopped and not yet resumed.
        self._stopped: set[tuple[str, int, int]] = set()
        self._exited: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        #: Events reported, by kind.
        self.events: dict[str, int] = {}
        #: Looks at the bound processes so far.
        self.polls = 0
        #: Polls that failed (logged, rate-limited); the thread goes on.
        self.errors = 0
        #: Looks at a process that exists but that ``/proc`` does not show us (``hidepid``).
        self.hidden = 0

    def start(self) -> None:
        """Start the polling thread."""
        self._stop.clear()
        self._waker = ExitWaker(use_pidfd=self._pidfd)
        self._thread = threading.Thread(target=self._run, name="rank-watch", daemon=True)
        self._thread.start()
        _log.info("rank watch started interval_s=%s proc=%s", self.interval_s, self._proc)

    def stop(self) -> None:
        """Stop the polling thread."""
        self._stop.set()
        if self._waker is not None:
            self._waker.interrupt()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._waker is not None:
            self._waker.close()
            self._waker = None

    def poll(self) -> list[tuple[str, RankEvent]]:
        """Look at every bound process once; report and return what changed."""
        self.polls += 1
        out: list[tuple[str, RankEvent]] = []
        live: set[tuple[str, int, int]] = set()
        for binding in self._bindings.bound():
            if binding.pid <= 0:
                continue  # a sender in a pid namespace we cannot see
            key = (binding.job, binding.rank, binding.pid)
            event = self._look(binding, key)
            if event is None or event.event != "exited":
                live.add(key)
            if event is not None:
                out.append((binding.job, event))
        self._stopped &= live
        for job, event in out:
            self.events[event.event] = self.events.get(event.event, 0) + 1
            self._sink(job, event)
        return out

    def _look(self, binding: Binding, key: tuple[str, int, int]) -> RankEvent | None:
        stat = self._read(binding.pid, self._proc)
        if stat is None and self._exists(binding.pid):
            self.hidden += 1  # /proc mounted with hidepid: we cannot tell, say nothing
            if self._limiter.allow() is not None:
                _log.warning("rank process not visible in %s job=%s rank=%d pid=%d: mount "
                             "/proc without hidepid (or give the agent its gid) for the rank "
                             "watch to work", self._proc, binding.job, binding.rank,
                             binding.pid)
            return None
        if stat is None or stat.state in _DEAD or (
                binding.start is not None and stat.start != binding.start):
            return self._exit(binding, key, stat if stat is not None and
                              stat.start == binding.start else None)
        stopped = stat.state in _STOPPED
        if stopped == (key in self._stopped):
            return None
        if stopped:
            self._stopped.add(key)
        else:
            self._stopped.discard(key)
        event = RankEvent(rank=binding.rank, ts=self._wall(), pid=binding.pid,
                          event="stopped" if stopped else "resumed")
        _log.warning("rank process %s job=%s rank=%d pid=%d state=%s", event.event,
                     binding.job, binding.rank, binding.pid, stat.state)
        return event

    def _exit(self, binding: Binding, key: tuple[str, int, int],
              zombie: ProcStat | None) -> RankEvent | None:
        """The bound process ended: release its rank; an event unless reported already."""
        self._bindings.release(binding.job, binding.rank, binding.pid)
        if key in self._exited:
            return None
        self._exited[key] = None
        while len(self._exited) > _MAX_EXITED:
            self._exited.popitem(last=False)
        status = None
        # The kernel shows the status only to who may trace the process (else 0).
        if zombie is not None and (self._trace_all or (
                self._euid == binding.uid and self._egid == binding.gid)):
            status = zombie.exit_status
        code, sig = _decode_status(status)
        _log.info("rank process exited job=%s rank=%d pid=%d exit_code=%s signal=%s",
                     binding.job, binding.rank, binding.pid, code, sig)
        return RankEvent(rank=binding.rank, ts=self._wall(), event="exited", pid=binding.pid,
                         exit_code=code, signal=sig)

    def _run(self) -> None:
        waker = self._waker
        assert waker is not None
        while not self._stop.is_set():
            try:
                self.poll()
                waker.watch(b.pid for b in self._bindings.bound())
            except Exception as exc:  # a bug or an odd /proc: never let the thread die
                self.errors += 1
                held = self._limiter.allow()
                if held is not None:
                    _log.error("rank watch poll failed errors=%d (%d more since last logged): "
                               "%r", self.errors, held, exc)
            waker.wait(self.interval_s)  # the interval, or less when a bound process exits
