"""Step assembly: one job's step records, late and out of order, gathered into whole steps.

A step ``(epoch, step)`` collects its ranks' records and *closes* when every rank of its
world size reported, or once the job's watermark (the largest event time seen for the
job) passes its first record's time plus ``wait_s``: the wait is bounded, so a missing
rank is decided within ``wait_s`` of event time. Steps close in order, so the per-rank
windows of the checks see steps in order whatever the arrival order. A record for a step
that already closed is counted (``late``) and left out of per-step checks.

Per-rank memory: each rank that reports gets a *slot*, a compact index into the per-rank
lists, so a job costs memory for the ranks that report, never for its world size or its
largest rank number (a record claiming rank 2^20 - 1 costs one slot, not a million).

Duplicates: a rank's record for a step that already holds one is compared with it. The
same record again (at-least-once delivery) is dropped silently; a *different* one is
kept out of the step and remembered as a
:class:`~trainguard.pipeline.consistency.conflicts.Conflict` (``conflicting_report``): the
first record stays, so a forged later copy cannot erase evidence such as a diverged
checksum.

Restarts: a rank whose step number goes back in its own event time, or that loads a
checkpoint, restarted. Once ``restart_quorum`` of the world did, the job enters a new *epoch*;
steps are keyed by ``(epoch, step)``, so a step number seen again is a new occurrence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.conflicts import Conflict, differing_fields, shown
from trainguard.schemas.records import StepRecord

__all__ = ["ClosedStep", "StepAssembler"]


@dataclass(slots=True)
class _OpenStep:
    epoch: int
    step: int
    first_ts: float
    last_ts: float
    world_size: int
    records: dict[int, StepRecord] = field(default_factory=dict)
    #: Per rank, the node that sent its record when not the node the record names.
    via: dict[int, str] = field(default_factory=dict)
    #: Per rank, the first different second report of its record (the first one stays).
    conflicts: dict[int, Conflict] = field(default_factory=dict)
    #: Records disagree on the world size (a resize around this step).
    mixed: bool = False

    def expected(self) -> int:
        """The world size most of this step's ranks report (a planned resize moves it)."""
        if not self.mixed:
            return self.world_size
        counts: dict[int, int] = {}
        for rec in self.records.values():
            counts[rec.world_size] = counts.get(rec.world_size, 0) + 1
        return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]

    def complete(self) -> bool:
        """Every rank of the expected world size reported."""
        if not self.mixed:
            return len(self.records) >= self.world_size
        ws = self.expected()
        return sum(1 for r in self.records if r < ws) >= ws


@dataclass(frozen=True, slots=True)
class ClosedStep:
    """A step at close: its records in rank order and what the checks need around them."""

    epoch: int
    step: int
    first_ts: float
    last_ts: float
    world_size: int
    records: list[StepRecord]
    complete: bool
    #: The job reached a later step of the same epoch: it went on past this one.
    progressed: bool
    #: First record times of the later open steps of the epoch, in step order (the job's
    #: step at a given event time, for step skew).
    later_first_ts: list[float]
    #: Event time at which the step was decided: its last record when every rank reported,
    #: else when its bounded wait ran out. Findings carry it as their ``ts``, so time to
    #: detect counts the wait and does not depend on how records were batched.
    decided_ts: float = 0.0
    #: Each record's rank slot in the assembler (same order as ``records``): where the
    #: per-rank state of the checks lives, compact whatever the rank numbers.
    slots: list[int] = field(default_factory=list)
    #: Ranks that reported this step twice, differently (``conflicting_report``).
    conflicts: tuple[Conflict, ...] = ()
    #: Each record's rank (same order as ``records``), known here without reading them.
    ranks: list[int] = field(default_factory=list)


class StepAssembler:
    """Gathers one job's step records into steps and closes them (see module docstring)."""

    def __init__(self, config: ConsistencyConfig) -> None:
        self.config = config
        self.watermark = -math.inf
        self.epoch = 0
        #: Event time the current epoch started (the first restarted rank's record).
        self.epoch_start = -math.inf
        self.world_size = 0
        self.late = 0
        self.malformed = 0
        self.forced = 0
        self.restarts = 0
        #: Slot of each rank that reported (see the module docstring), and back.
        self.slot_of: dict[int, int] = {}
        self.slot_rank: list[int] = []
        #: Records that differ from the rank's record already in their step (kept out).
        self.conflicting = 0
        # Per rank, indexed by its slot: its latest record (by event time) and its epoch.
        self.last_ts: list[float] = []
        self.last_step: list[int] = []
        self.rank_node: list[str] = []
        self.rank_gpu: list[int | None] = []
        self.rank_epoch: list[int] = []
        self._rank_since: list[float] = []
        self._open: dict[tuple[int, int], _OpenStep] = {}
        self._closed_upto: dict[int, int] = {}
        self._max_step: dict[int, int] = {}
        self._jumped = 0
        self._pending_start = math.inf

    @property
    def open_steps(self) -> int:
        """Steps waiting for ranks."""
        return len(self._open)

    def ranks_on(self, node: str, gpu: int | None = None) -> tuple[int, ...]:
        """Ranks last seen on ``node`` (and GPU ``gpu``), from their step records."""
        return tuple(sorted(r for r, n, g in zip(self.slot_rank, self.rank_node, self.rank_gpu,
                                                 strict=True)
                            if n == node and (gpu is None or g == gpu)))

    def slot(self, rank: int) -> int | None:
        """The slot of ``rank`` in the per-rank lists, None if it never reported."""
        return self.slot_of.get(rank)

    def advance(self, ts: float) -> None:
        """Move the watermark with a record that is not a step (GPU samples, checkpoints)."""
        if ts > self.watermark:
            self.watermark = ts

    def loaded(self, rank: int, ts: float) -> None:
        """``rank`` loaded a checkpoint at ``ts``: it restarted, whatever its next step.

        A restart from the latest checkpoint need not go back in steps; the load says it
        all the same, so new code or seeds after it are not a change mid-run.
        """
        if rank >= self.config.max_world_size:
            return
        self.advance(ts)
        s = self.slot_of.get(rank)
        if s is None:
            s = self._new_slot(rank)
        if ts < self.last_ts[s] or ts <= self._rank_since[s]:
            return  # its own later records tell what happened, or a duplicate load
        self._went_back(s, ts)
        # Its step count starts over: its next record is no further step back.
        self.last_ts[s], self.last_step[s] = ts, -1

    def add(self, rec: StepRecord, source: str | None = None) -> None:
        """Take one record (see :meth:`add_many`)."""
        self.add_many((rec,), source)

    def add_many(self, records: Sequence[StepRecord], source: str | None = None) -> None:
        """Take records in arrival order; late and malformed ones are only counted.

        ``source`` is the node that sent them (a step batch's ``node``); ``None``: each
        record's own ``node``. A conflict names the sender of each version.

        The hot loop of the stage (once per rank and step), hence the local names and the
        step of the previous record kept at hand: a node's batch is mostly one step.
        """
        last_ts, last_step, rank_epoch = self.last_ts, self.last_step, self.rank_epoch
        rank_node, rank_gpu, since = self.rank_node, self.rank_gpu, self._rank_since
        opened, slot_of = self._open, self.slot_of
        st: _OpenStep | None = None
        st_epoch = st_step = -1
        wm = self.watermark
        max_ws = self.config.max_world_size
        for rec in records:
            r, ts, step, ws = rec.rank, rec.ts, rec.step, rec.world_size
            if r >= ws or ws > max_ws:
                self.malformed += 1
                continue
            if ts > wm:
                wm = ts
            s = slot_of.get(r)
            if s is None:
                s = self._new_slot(r)
            epoch = rank_epoch[s]
            last = last_ts[s]
            if ts >= last:
                if ts > last and step < last_step[s]:
                    epoch = self._went_back(s, ts)
                elif epoch < self.epoch and ts >= self.epoch_start:
                    # Restarted without going back (it had stopped early): join the epoch.
                    epoch = rank_epoch[s] = self.epoch
                    since[s] = ts
                last_ts[s], last_step[s], rank_node[s], rank_gpu[s] = (
                    ts, step, rec.node, rec.gpu_index)
                self.world_size = ws
            elif ts < since[s]:
                epoch -= 1  # a straggling record from before this rank restarted
            if st is None or step != st_step or epoch != st_epoch:
                st = opened.get((epoch, step))
                if st is None:
                    if epoch < self.epoch or step <= self._closed_upto.get(epoch, -1):
                        self.late += 1
                        continue
                    st = opened[(epoch, step)] = _OpenStep(epoch, step, ts, ts, ws)
                    if step > self._max_step.get(epoch, -1):
                        self._max_step[epoch] = step
                st_epoch, st_step = epoch, step
            prev = st.records.get(r)
            if prev is None:
                st.records[r] = rec
                if source is not None and source != rec.node:
                    st.via[r] = source
            elif prev != rec:  # the same record again is at-least-once delivery: silent
                self._conflict(st, prev, rec, source)
                continue
            if ts < st.first_ts:
                st.first_ts = ts
            elif ts > st.last_ts:
                st.last_ts = ts
            if ws != st.world_size:
                st.mixed = True
        self.watermark = wm

    def _conflict(self, st: _OpenStep, prev: StepRecord, rec: StepRecord,
                  source: str | None) -> None:
        """Keep ``prev`` in the step; remember the rank's first different second report."""
        self.conflicting += 1
        r = rec.rank
        if r in st.conflicts:
            return  # one conflict per rank and step is the evidence; the rest are counted
        fields = differing_fields(prev, rec)
        # The event time of a copy differs anyway: show a field that says more, if any.
        shown_field = next((f for f in fields if f != "ts"), "ts")
        st.conflicts[r] = Conflict(
            rank=r, step=st.step, first_source=st.via.get(r, prev.node),
            second_source=source or rec.node, first_ts=prev.ts, second_ts=rec.ts,
            fields=fields, first_value=shown(getattr(prev, shown_field)),
            second_value=shown(getattr(rec, shown_field)), first_pid=prev.pid,
            first_uid=prev.uid, second_pid=rec.pid, second_uid=rec.uid)

    def close_due(self, now: float) -> list[ClosedStep]:
        """Close, in step order, every step that is complete or whose wait expired at ``now``."""
        if not self._open:
            return []
        wait = self.config.wait_s
        out: list[ClosedStep] = []
        for key in sorted(self._open):
            st = self._open[key]
            over = len(self._open) > self.config.max_open_steps
            if key[0] < self.epoch or over or now >= st.first_ts + wait or st.complete():
                self.forced += over
                out.append(self._close(key, st))
            else:
                break  # in order: later steps wait for this one
        return out

    def _close(self, key: tuple[int, int], st: _OpenStep) -> ClosedStep:
        del self._open[key]
        epoch, step = key
        if step > self._closed_upto.get(epoch, -1):
            self._closed_upto[epoch] = step
        ws = st.expected()
        later: list[float] = []
        if st.last_ts > st.first_ts:  # only then can a rank of this step trail the job
            later = [s.first_ts for k, s in sorted(self._open.items())
                     if k[0] == epoch and k[1] > step]
        order = sorted(st.records)
        records = list(map(st.records.__getitem__, order))
        return ClosedStep(
            epoch=epoch, step=step, first_ts=st.first_ts, last_ts=st.last_ts, world_size=ws,
            records=records, complete=st.complete(),
            progressed=self._max_step.get(epoch, -1) > step, later_first_ts=later,
            decided_ts=st.last_ts if st.complete() else max(st.last_ts,
                                                            st.first_ts + self.config.wait_s),
            slots=list(map(self.slot_of.__getitem__, order)),
            conflicts=tuple(st.conflicts[r] for r in sorted(st.conflicts)), ranks=order,
        )

    def _went_back(self, s: int, ts: float) -> int:
        """The rank in slot ``s`` went back (restarted) at ``ts``; its epoch now."""
        current = self.rank_epoch[s]
        if current >= self.epoch:
            if current == self.epoch:
                self._jumped += 1
                self._pending_start = min(self._pending_start, ts)
            new = self.epoch + 1
        else:
            new = self.epoch
        self.rank_epoch[s] = new
        self._rank_since[s] = ts
        quorum = max(1, math.ceil(self.config.restart_quorum * max(self.world_size, 1)))
        if new > self.epoch and self._jumped >= quorum:
            self._advance()
        return new

    def _advance(self) -> None:
        """Enter a new epoch: the old one's open steps close at the next ``close_due``."""
        self.epoch += 1
        self.epoch_start = self._pending_start
        self._jumped = 0
        self._pending_start = math.inf
        self.restarts += 1
        self._closed_upto = {e: s for e, s in self._closed_upto.items() if e >= self.epoch}
        # An old epoch's last steps did not progress: no rank of theirs is "missing".
        self._max_step = {e: s for e, s in self._max_step.items() if e >= self.epoch}

    def _new_slot(self, rank: int) -> int:
        """A slot for a rank reporting for the first time: a few list entries, no more."""
        s = self.slot_of[rank] = len(self.slot_rank)
        self.slot_rank.append(rank)
        self.last_ts.append(-math.inf)
        self.last_step.append(-1)
        self.rank_node.append("")
        self.rank_gpu.append(None)
        self.rank_epoch.append(self.epoch)
        self._rank_since.append(-math.inf)
        return s
