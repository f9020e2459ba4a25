"""``rank_exited`` and ``rank_hung``: a dead or hung rank named although its peers stop too.

In a real job a rank that dies or hangs stops its peers inside the next collective, so
"the peers keep stepping" (``rank_missing``) never happens. The node agents watch the
processes bound to ranks (``exited``, ``stopped``, ``resumed``) and the trainer kit says
``bye`` (why it ends) and ``waiting`` (since when it waits in which collective); both
arrive as :class:`~trainguard.schemas.ranks.RankEvent` s in the job's step batches.

* ``rank_exited``: a rank's process exited without ``bye finished``. Departures are judged
  ``exit_grace_s`` after they happened (a peer's exit noticed on another node arrives a tick
  later); a departure without ``bye`` (SIGKILL, a segfault, the OOM killer) is judged as if
  ``exit_grace_s`` earlier, since its peers' crash reports can precede the noticed exit.
  The earliest failing departure is blamed (the *lead*); ranks that leave within
  ``follow_s`` after it with ``bye error`` or ``bye terminated`` (peers failing on the broken
  collective, the launcher tearing the group down), or killed by SIGTERM without a bye, are
  its *followers*, listed in evidence and not blamed; other kills within ``exit_grace_s`` of
  it are blamed each. ``bye terminated`` departures without a lead are benign when every rank of
  the job's world left within ``terminate_window_s`` (a job stop, an elastic restart); a
  terminated rank whose peers keep running is blamed.
* ``rank_hung``: a process stopped for ``hang_stopped_s``; or ranks waiting in a collective
  for ``hang_after_s`` while live ranks of the world report no wait: those never arrived
  (at most as many as wait, so a lone waiter does not blame the job). Clears when the rank
  resumes or steps again.

Pure logic on the job's event clock: :class:`RankEventWatch` holds per rank only its last
bye, stop, wait and departure, for ranks below the world size (or ``max_event_ranks`` before
one is known); events past that are counted (``dropped``), never stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import Fault
from trainguard.schemas.ranks import RankEvent

__all__ = ["RankEventWatch"]

_SIGTERM = 15  # Linux's number, as the agents report it (the worker may run elsewhere)

#: Followers named in evidence at most (the count is exact).
_NAMED = 20


@dataclass(slots=True)
class _Departure:
    """One rank process that exited, and what its bye (if any) said."""

    rank: int
    node: str
    ts: float
    pid: int | None
    exit_code: int | None
    signal: int | None
    #: ``finished`` / ``error`` / ``terminated`` from the rank's bye, ``killed`` without one.
    kind: str
    step: int | None
    #: The job's world size when it left (a restart may change it before the verdict).
    world_size: int


class RankEventWatch:
    """One job's rank processes: departures to judge and ranks stopped or waiting."""

    def __init__(self, config: ConsistencyConfig) -> None:
        self.config = config
        #: Per rank seen in events: the node its agent is on (also the tracked-ranks cap).
        self.nodes: dict[int, str] = {}
        #: Per rank: its last bye not yet matched to an exit, its stop, its wait, and the
        #: event time its process exited (until it steps again).
        self.byes: dict[int, RankEvent] = {}
        self.stopped: dict[int, RankEvent] = {}
        self.waiting: dict[int, RankEvent] = {}
        #: Per rank: its latest ``busy`` (a checkpoint, an evaluation of its own): peers
        #: waiting for it meanwhile are not waiting for a hung rank.
        self.busy: dict[int, RankEvent] = {}
        self.gone: dict[int, float] = {}
        self.pending: list[_Departure] = []
        #: Departures pending or recent by ``(rank, pid)``: a redelivered exit is one exit.
        self._left: dict[tuple[int, int | float], _Departure] = {}
        #: Judged departures within ``follow_s`` (followers and terminate windows read them).
        self.recent: list[_Departure] = []
        self.lead: _Departure | None = None
        self.events = 0
        self.dropped = 0
        self._quiet = 0
        #: New events since the last verdict, and the event time of the next one without.
        self._dirty = False
        self._next = -math.inf
        #: The last window in which every rank left (a job stop): its other exits are benign.
        self._stop = (math.inf, -math.inf)

    @property
    def active(self) -> bool:
        """Something to judge (or a ``rank_hung`` finding still to clear)."""
        return bool(self.pending or self.stopped or self.waiting) or self._quiet > 0

    def observe(self, events: Sequence[RankEvent], node: str, world_size: int) -> None:
        """Take the events of one step batch (from ``node``'s agent), in time order.

        Events for a rank at or past the job's world size (or, before one is known, past
        ``max_event_ranks`` ranks) are counted in :attr:`dropped` and not kept.
        """
        cap = max(world_size, self.config.max_event_ranks)
        for ev in sorted(events, key=lambda e: e.ts):
            if ev.rank not in self.nodes and (
                    (world_size > 0 and ev.rank >= world_size) or len(self.nodes) >= cap):
                self.dropped += 1
                continue
            self.events += 1
            self._dirty = True
            self.nodes[ev.rank] = node
            self._one(ev, node, world_size)

    def _one(self, ev: RankEvent, node: str, world_size: int) -> None:
        r, kind = ev.rank, ev.event
        if kind == "stopped":
            self.stopped[r] = ev
        elif kind == "resumed":
            self.stopped.pop(r, None)
        elif kind == "waiting":
            self.waiting[r] = ev
            self.busy.pop(r, None)
        elif kind == "busy":
            self.busy[r] = ev
            self.waiting.pop(r, None)
        elif kind == "bye":
            self.waiting.pop(r, None)
            self.busy.pop(r, None)
            late = self._left.get((r, ev.pid)) if ev.pid is not None else None
            if late is not None and late.kind == "killed" and ev.ts <= late.ts \
                    and any(late is d for d in self.pending):
                # The bye came after the exit it explains (and before the verdict).
                late.kind, late.step = ev.reason or "finished", ev.step
            else:
                self.byes[r] = ev
        else:  # exited
            key = (r, ev.pid if ev.pid is not None else ev.ts)
            if key in self._left or len(self.pending) >= max(
                    world_size, self.config.max_event_ranks):
                self.dropped += key not in self._left  # a redelivered exit is no news
                return
            bye = self.byes.pop(r, None)
            if bye is not None and not (_same(bye.pid, ev.pid)
                                        and bye.ts <= ev.ts + self.config.exit_grace_s):
                bye = None  # another process's goodbye
            self.stopped.pop(r, None)
            self.waiting.pop(r, None)
            self.busy.pop(r, None)
            self.gone[r] = ev.ts
            d = self._left[key] = _Departure(
                r, node, ev.ts, ev.pid, ev.exit_code, ev.signal,
                "killed" if bye is None else bye.reason or "finished",
                None if bye is None else bye.step, world_size)
            self.pending.append(d)

    def judge(self, now: float, last_step_ts: Callable[[int], float],
              node_of: Callable[[int], str], world_size: int
              ) -> tuple[list[Fault], list[Fault] | None]:
        """``(rank_exited, rank_hung)`` faults at the job's event time ``now``.

        ``last_step_ts(rank)`` is the event time of the rank's latest step record (a rank
        that stepped after a stop or a wait is at work again); ``node_of(rank)`` its node.
        Without new events a verdict is due every ``rank_check_every_s`` of event time
        only (a big job's agents send thousands of batches a second); in between ``rank_hung``
        is ``None``: no evaluation, so nothing clears.
        """
        if not self._dirty and now < self._next:
            return [], None
        self._dirty = False
        self._next = now + self.config.rank_check_every_s
        exited = self._departures(now, last_step_ts)
        hung = self._stopped(now, last_step_ts) + self._never_arrived(
            now, last_step_ts, node_of, world_size)
        self._quiet = self.config.clear_steps + 1 if hung else max(0, self._quiet - 1)
        return exited, hung

    def _order(self, d: _Departure) -> float:
        """When ``d`` counts as having happened: a kill is noticed late, so earlier."""
        return d.ts - (self.config.exit_grace_s if d.kind == "killed" else 0.0)

    def _departures(self, now: float, last_step_ts: Callable[[int], float]) -> list[Fault]:
        c = self.config
        grace = c.exit_grace_s
        # Kept long enough for the followers of a lead, a stop's window and a finished
        # rank's window on both sides of it.
        horizon = now - max(c.follow_s + c.terminate_window_s, 2 * c.finish_window_s) \
            - 2 * grace
        if self.recent:
            for d in self.recent:
                if d.ts < horizon:
                    self._left.pop((d.rank, d.pid if d.pid is not None else d.ts), None)
            self.recent = [d for d in self.recent if d.ts >= horizon]
        due = [d for d in self.pending if now >= self._order(d) + 2 * grace + (
            c.terminate_window_s if d.kind == "terminated" else
            c.finish_window_s if d.kind == "finished" else 0.0)]
        if not due:
            return []
        taken = {id(d) for d in due}
        self.pending = [d for d in self.pending if id(d) not in taken]
        self.recent += due
        faults: list[Fault] = []
        for d in sorted(due, key=self._order):
            if d.kind == "finished" and (self._all_left(d, c.finish_window_s)
                                         or last_step_ts(d.rank) > d.ts):
                continue  # the job finished, or a new process took the rank's place
            lead = self.lead
            if lead is not None and lead.rank != d.rank and \
                    lead.ts - grace <= d.ts <= lead.ts + c.follow_s:
                if not self._killed_with(d, lead):
                    continue  # a follower (listed in the lead's evidence)
            elif d.kind == "terminated" and (self._stop[0] <= d.ts <= self._stop[1]
                                             or self._all_left(d)):
                continue  # the whole job stopped or restarts
            if lead is None or d.ts > lead.ts + grace or lead.rank == d.rank:
                self.lead = d
            faults.append(self._exit_fault(d, now))
        return faults

    def _all_left(self, d: _Departure, window: float | None = None) -> bool:
        """Every rank of ``d``'s world left within ``window`` of it (a job stop).

        ``window`` defaults to ``terminate_window_s``. An unknown world size (0) cannot
        be checked and counts as everyone.
        """
        w = self.config.terminate_window_s if window is None else window
        left = {x.rank for x in (*self.recent, *self.pending) if abs(x.ts - d.ts) <= w}
        ws = d.world_size
        if ws > 0 and (len(left) < ws or not all(r in left for r in range(ws))):
            return False
        if window is None:
            self._stop = (d.ts - w, d.ts + w)  # the job's other exits of the stop: no rescan
        return True

    def _killed_with(self, d: _Departure, lead: _Departure) -> bool:
        """``d`` was killed along with ``lead``, not after it: blamed too, no follower.

        Kills within the grace of the lead are each blamed (the OOM killer, a node's
        processes killed together), but not a SIGTERM: that is how a launcher stops a group
        (torchrun stops a node's other workers the moment one dies), often before the kit's
        bye can leave.
        """
        return (d.kind == "killed" and d.ts <= lead.ts + self.config.exit_grace_s
                and d.signal != _SIGTERM)

    def _exit_fault(self, d: _Departure, now: float) -> Fault:
        grace = self.config.exit_grace_s
        followers = sorted({x.rank for x in (*self.recent, *self.pending)
                            if x.rank != d.rank and x.kind != "finished"
                            and d.ts - grace <= x.ts <= now
                            and not self._killed_with(x, d)})
        pid = f"process {d.pid}" if d.pid is not None else "its process"
        if d.kind == "killed":
            how = (f"killed by signal {d.signal}" if d.signal else
                   f"exit code {d.exit_code}" if d.exit_code is not None else "exit status unknown")
            what = f"{pid} exited without saying bye ({how})"
        elif d.kind == "error":
            what = f"{pid} exited on an error (bye error)"
        elif d.kind == "finished":
            what = (f"{pid} said it finished (bye finished) but the rest of the job did not "
                    f"finish within {self.config.finish_window_s:g} s")
        else:
            what = f"{pid} was terminated (bye terminated) while its peers kept running"
        at = f" after step {d.step}" if d.step is not None else ""
        then = (f"; {len(followers)} rank{'s' if len(followers) > 1 else ''} followed "
                f"({', '.join(map(str, followers[:8]))}{', …' if len(followers) > 8 else ''})"
                if followers else "")
        return Fault(
            check="rank_exited", category="availability",
            entities=(("exited", d.rank, d.pid if d.pid is not None else d.ts),),
            summary=f"rank {d.rank} on {d.node}: {what}{at}{then}",
            first_seen=d.ts, ts=max(now, d.ts), step=d.step, ranks=(d.rank,), nodes=(d.node,),
            observed=d.kind, expected="finished", score=1.0,
            evidence={"pid": d.pid, "exit_code": d.exit_code, "signal": d.signal,
                      "bye": "none" if d.kind == "killed" else d.kind,
                      "exited_ts": d.ts, "last_step": d.step,
                      "followers": ",".join(map(str, followers[:_NAMED])),
                      "followers_count": len(followers), "world_size": d.world_size},
        )

    def _stopped(self, now: float, last_step_ts: Callable[[int], float]) -> list[Fault]:
        out: list[Fault] = []
        for rank, ev in list(self.stopped.items()):
            if last_step_ts(rank) > ev.ts:  # it stepped since: the resume was missed
                del self.stopped[rank]
                continue
            held = now - ev.ts
            if held >= self.config.hang_stopped_s:
                pid = f"process {ev.pid}" if ev.pid is not None else "its process"
                node = self.nodes.get(rank, "")
                out.append(_hung(rank, node, ev.ts, now, held, (
                    f"rank {rank} on {node}: {pid} has been stopped for {held:.1f} s "
                    "(SIGSTOP or a debugger); its peers wait for it in the next collective"),
                    {"cause": "stopped", "pid": ev.pid, "since": ev.ts, "stalled_s": held}))
        return out

    def _never_arrived(self, now: float, last_step_ts: Callable[[int], float],
                       node_of: Callable[[int], str], world_size: int) -> list[Fault]:
        if not self.waiting:
            return []
        for rank, ev in list(self.waiting.items()):
            if last_step_ts(rank) > ev.ts:  # it stepped since: the collective completed
                del self.waiting[rank]
        waiting = {r: ev for r, ev in self.waiting.items() if r < world_size}
        since = [ev.since if ev.since is not None else ev.ts for ev in waiting.values()]
        if not waiting or now - min(since) < self.config.hang_after_s:
            return []
        for rank, ts in list(self.gone.items()):
            if last_step_ts(rank) > ts:  # a new process of the rank steps
                del self.gone[rank]
        gone = {r for r in self.gone if r < world_size}
        busy = self._busy(now, last_step_ts, world_size)
        if 2 * len(waiting) < world_size - len(gone) - len(busy):
            return []  # more ranks not waiting than waiting: no telling who is late
        absent = [r for r in range(world_size)
                  if r not in waiting and r not in gone and r not in busy]
        first = min(waiting.values(), key=lambda e: e.since if e.since is not None else e.ts)
        held = now - min(since)
        coll = f" {first.collective}" if first.collective is not None else ""
        return [_hung(r, node_of(r), min(since), now, held, (
            f"rank {r} on {node_of(r) or 'an unknown node'} never arrived in collective{coll}: "
            f"{len(waiting)} of {world_size} ranks have waited in it for {held:.1f} s"
            + (f" (step {first.step})" if first.step is not None else "")),
            {"cause": "never_arrived", "collective": first.collective, "since": min(since),
             "stalled_s": held, "waiting_ranks": len(waiting), "world_size": world_size})
            for r in absent]


    def _busy(self, now: float, last_step_ts: Callable[[int], float],
              world_size: int) -> set[int]:
        """Ranks busy in a phase of their own, as their kit said within ``hang_after_s``.

        The kit repeats ``busy`` while the phase lasts; a rank that stepped since, or went
        quiet (hung inside the phase, or the phase ended and it hangs elsewhere), is not.
        """
        for rank, ev in list(self.busy.items()):
            if last_step_ts(rank) > ev.ts or now - ev.ts > self.config.hang_after_s:
                del self.busy[rank]
        return {r for r in self.busy if r < world_size}


def _hung(rank: int, node: str, since: float, now: float, held: float, summary: str,
          evidence: dict[str, float | str | None]) -> Fault:
    return Fault(
        check="rank_hung", category="availability", entities=(rank,), summary=summary,
        first_seen=since, ts=now, ranks=(rank,), nodes=(node,) if node else (),
        observed=held, score=held, evidence=evidence)


def _same(a: int | None, b: int | None) -> bool:
    """Two events name the same process (or one of them does not say which)."""
    return a is None or b is None or a == b
