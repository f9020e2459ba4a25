"""Who speaks on the step socket: each (job, rank) belongs to the first live process claiming it.

The step socket is open to a group of users (the trainers), so any process of theirs can
send a datagram naming any job and rank. What a datagram *says* about its sender proves
nothing; what the kernel says does: the intake turns on ``SO_PASSCRED`` and reads the
sender's pid, uid and gid from each datagram's ``SCM_CREDENTIALS`` (Unix *datagram*
sockets have no per-datagram ``SO_PEERCRED``; with ``SO_PASSCRED`` on the receiving
socket the kernel attaches the real sender's credentials whether it sent any or not).

:class:`RankBindings` binds a ``(job, rank)`` to the first process that reports for it.
Reports from that process are admitted, and from its own children with its uid (a
trainer that forks: its code speaks for the rank either way); so are those of a new
process once the holder is gone (a restart). While the holder lives, a second process
claiming the rank is refused and reported once as a
:class:`~trainguard.schemas.records.RankClaim`, which the agent sends with the job's
steps and the worker turns into a ``conflicting_report`` finding.
"Lives" means ``/proc/<pid>`` exists *with the start time it had when it bound*, so a pid
the kernel recycled for another process does not hold the rank.

A claimant with the holder's uid that is already gone when its datagram is read (a child
that reported and exited at once looks the same) is refused but not reported
(``unverified``): its reports never pass, and no finding accuses a trainer's own worker.

Limits worth knowing: a sender in a pid namespace the agent cannot see arrives as pid 0
(run the agent in the host's pid namespace); all pid-0 senders look like one process.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from trainguard.schemas.records import MAX_CLAIMS_PER_BATCH, RankClaim

__all__ = ["CREDENTIALS_SPACE", "MAX_PENDING_CLAIMS", "Binding", "Peer", "RankBindings",
           "parent_pid", "peer_credentials", "process_start", "stat_fields"]

_log = logging.getLogger(__name__)

_UCRED: Final = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid
#: Ancillary buffer that holds one ``SCM_CREDENTIALS`` message.
CREDENTIALS_SPACE: Final = socket.CMSG_SPACE(_UCRED.size)
#: Claims waiting for the agent's next tick, over every job: what a flood of forged job ids
#: can make the agent hold and send per tick (the rest is counted in ``refused``).
MAX_PENDING_CLAIMS: Final = 1024
# Children of one holder remembered as speaking for its rank (data-loader workers, ...).
_MAX_CHILDREN: Final = 64


@dataclass(frozen=True, slots=True)
class Peer:
    """A datagram's sender as the kernel saw it."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Binding:
    """A (job, rank) and the process bound to it, as :meth:`RankBindings.bound` lists them."""

    job: str
    rank: int
    pid: int
    uid: int
    #: The process's start time when it bound (``None``: unreadable then).
    start: int | None
    gid: int


def peer_credentials(ancdata: Sequence[tuple[int, int, bytes]]) -> Peer | None:
    """The sender's credentials from ``recvmsg`` ancillary data; ``None`` if absent."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and \
                len(data) >= _UCRED.size:
            pid, uid, gid = _UCRED.unpack_from(data)
            return Peer(pid, uid, gid)
    return None


def stat_fields(pid: int, proc: Path = Path("/proc")) -> list[bytes] | None:
    """Fields 3 and on (``man 5 proc``) of ``/proc/<pid>/stat``; ``None`` if it is gone.

    Field ``n`` (1-based) is item ``n - 3`` of the list.
    """
    try:
        stat = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    return stat[stat.rfind(b")") + 2:].split()


def _stat_field(pid: int, field: int, proc: Path) -> int | None:
    """Field ``field`` (1-based, ``man 5 proc``) of ``/proc/<pid>/stat``; ``None`` if gone."""
    fields = stat_fields(pid, proc)
    if fields is None:
        return None
    try:
        return int(fields[field - 3])
    except (IndexError, ValueError):
        return None


def process_start(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot); ``None`` if it is gone."""
    return _stat_field(pid, 22, proc)


def parent_pid(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The parent of process ``pid``; ``None`` if it is gone."""
    return _stat_field(pid, 4, proc)


def _alive(pid: int, start: int | None) -> bool:
    """True while the process that bound with ``start`` still runs as ``pid``."""
    if pid <= 0:
        return True  # an invisible sender (other pid namespace): cannot tell, keep it
    now = process_start(pid)
    if now is not None:
        return start is None or now == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None  # no /proc here, or it was gone from /proc: trust the signal only


@dataclass(slots=True)
class _Holder:
    pid: int
    uid: int
    start: int | None
    since: float
    gid: int = -1
    #: Its children (same uid) that reported for the rank too.
    children: set[int] = field(default_factory=set)


class RankBindings:
    """Binds each (job, rank) to the first live process that claims it (thread-safe).

    ``alive(pid, start)`` tells whether the holder still runs; ``start(pid)`` and
    ``parent(pid)`` read a process's start time and parent; ``wall`` is the agent's clock
    for a claim's ``ts``. At most
    ``max_bindings`` ranks are remembered (least recently heard forgotten first, counted
    in ``evicted``) and each refused claimant is reported once. The rank watch
    (:mod:`.rank_watch`) reads the bindings (:meth:`bound`) and frees the rank of a process
    that exited (:meth:`release`), so a restarted rank's new process binds at once.
    """

    def __init__(
        self,
        *,
        max_bindings: int = 4096,
        alive: Callable[[int, int | None], bool] = _alive,
        start: Callable[[int], int | None] = process_start,
        parent: Callable[[int], int | None] = parent_pid,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_bindings < 1:
            raise ValueError(f"max_bindings {max_bindings}: expected >= 1")
        self._max = max_bindings
        self._alive, self._start, self._wall = alive, start, wall
        self._parent = parent
        self._holders: OrderedDict[tuple[str, int], _Holder] = OrderedDict()
        # The intake's reader thread admits, the rank watch's thread lists and releases.
        self._lock = threading.Lock()
        # Claimants already reported: (job, rank, holder pid, claimant pid).
        self._reported: OrderedDict[tuple[str, int, int, int], None] = OrderedDict()
        self._pending: dict[str, list[RankClaim]] = {}
        self._pending_total = 0
        #: Datagrams refused because another live process holds their (job, rank).
        self.refused = 0
        #: Distinct claimants reported (each one refused, first time).
        self.conflicts = 0
        #: Ranks handed to a new process after their holder ended.
        self.rebound = 0
        #: Bindings forgotten because ``max_bindings`` ranks were held.
        self.evicted = 0
        #: Refused claims not reported: the claimant (the holder's uid) was gone before
        #: it could be told from the holder's own child.
        self.unverified = 0
        #: Bindings freed because their process exited (:meth:`release`).
        self.released = 0

    def admit(self, job: str, rank: int, peer: Peer, step: int | None = None) -> bool:
        """True if ``peer`` may report for ``(job, rank)``; a refusal is counted and reported."""
        with self._lock:
            return self._admit(job, rank, peer, step)

    def bound(self) -> list[Binding]:
        """Every (job, rank) bound now and its process (a snapshot)."""
        with self._lock:
            return [Binding(job, rank, h.pid, h.uid, h.start, h.gid)
                    for (job, rank), h in self._holders.items()]

    def release(self, job: str, rank: int, pid: int) -> bool:
        """Free ``(job, rank)`` if process ``pid`` still holds it (it exited); True if freed."""
        with self._lock:
            holder = self._holders.get((job, rank))
            if holder is None or holder.pid != pid:
                return False  # a newer process holds it already
            del self._holders[(job, rank)]
            self.released += 1
            return True

    def _admit(self, job: str, rank: int, peer: Peer, step: int | None) -> bool:
        key = (job, rank)
        holder = self._holders.get(key)
        if holder is not None and (holder.pid == peer.pid or peer.pid in holder.children):
            self._holders.move_to_end(key)
            return True
        alive = holder is not None and self._alive(holder.pid, holder.start)
        if holder is not None and alive and self._child(holder, peer):
            return True
        if holder is None or not alive:
            if holder is not None:
                self.rebound += 1
                _log.info("step socket rank rebound job=%s rank=%d old_pid=%d new_pid=%d uid=%d",
                          job, rank, holder.pid, peer.pid, peer.uid)
                del self._holders[key]
            self._bind(key, peer)
            return True
        self.refused += 1
        if peer.uid == holder.uid and self._parent(peer.pid) is None:
            # Gone before we read it, same user: a child that exited at once or another
            # process, no telling. Its report is refused all the same; no finding.
            self.unverified += 1
            return False
        self._report(job, rank, holder, peer, step)
        return False

    def _child(self, holder: _Holder, peer: Peer) -> bool:
        """``peer`` is the holder's own child with its uid: remembered, admitted."""
        if peer.uid != holder.uid or len(holder.children) >= _MAX_CHILDREN or \
                self._parent(peer.pid) != holder.pid:
            return False
        holder.children.add(peer.pid)
        return True

    def drain(self) -> dict[str, list[RankClaim]]:
        """Claims refused since the last call, per job."""
        with self._lock:
            out, self._pending, self._pending_total = self._pending, {}, 0
        return out

    def _bind(self, key: tuple[str, int], peer: Peer) -> None:
        self._holders[key] = _Holder(peer.pid, peer.uid, self._start(peer.pid), self._wall(),
                                     peer.gid)
        while len(self._holders) > self._max:
            self._holders.popitem(last=False)
            self.evicted += 1

    def _report(self, job: str, rank: int, holder: _Holder, peer: Peer, step: int | None) -> None:
        seen = (job, rank, holder.pid, peer.pid)
        if seen in self._reported:
            return
        pending = self._pending.get(job, [])
        if len(pending) >= MAX_CLAIMS_PER_BATCH or self._pending_total >= MAX_PENDING_CLAIMS:
            return  # reported on a later datagram of the claimant, after the next drain
        self._pending[job] = pending
        self._pending_total += 1
        self._reported[seen] = None
        while len(self._reported) > self._max:
            self._reported.popitem(last=False)
        self.conflicts += 1
        pending.append(RankClaim(
            rank=rank, ts=self._wall(), step=step, pid=peer.pid, uid=peer.uid,
            holder_pid=holder.pid, holder_uid=holder.uid, holder_since=holder.since))
        _log.warning("step socket rank claimed twice job=%s rank=%d holder_pid=%d holder_uid=%d "
                     "claimant_pid=%d claimant_uid=%d: claimant refused", job, rank, holder.pid,
                     holder.uid, peer.pid, peer.uid)
