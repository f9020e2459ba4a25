"""Presence checks: ranks that stop reporting, ranks that trail the job, a job that stalls.

* ``rank_missing``: at a step that closed without all ranks, the ranks of the world size
  that sent nothing since the step began, while at least ``missing_quorum`` of the world
  reported and the job went on past the step. A job that stops as a whole (checkpoint
  save, eval, restart, a hang) closes no partial step, and a partial last step before a
  stop did not progress: neither blames anyone.
* ``step_skew``: a rank still reporting whose step trails the job's by ``skew_steps``, in
  event time: the job's step at the time of the rank's record is the number of later
  steps that had begun by then.
* ``job_stalled`` (info): the job's GPUs keep reporting but no step closed for ``stall_s``.
"""

from __future__ import annotations

import math

import numpy as np

from trainguard.pipeline.consistency.assembler import ClosedStep, StepAssembler
from trainguard.pipeline.consistency.columns import IntArray, StepColumns
from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import Fault

__all__ = ["job_stalled", "rank_missing", "step_skew"]


def _absent(cs: ClosedStep, cols: StepColumns) -> IntArray:
    """Ranks of the step's world size that did not report it."""
    if cs.complete:
        return np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(cs.world_size, dtype=np.int64), cols.ranks, assume_unique=True)


def _alive(asm: StepAssembler, rank: int, since: float) -> bool:
    """The rank sent a record (of any step) at or after event time ``since``."""
    s = asm.slot(rank)
    return s is not None and asm.last_ts[s] >= since


def _absent_known(cs: ClosedStep, cols: StepColumns, asm: StepAssembler) -> list[int]:
    """Ranks of the world size that reported before but not this step, in rank order.

    Only ranks the assembler knows can be alive: scanning them, not ``range(world_size)``,
    keeps a forged world size from costing a step a million iterations.
    """
    if cs.complete:
        return []
    known = np.fromiter(asm.slot_of, dtype=np.int64, count=len(asm.slot_of))
    return np.setdiff1d(known[known < cs.world_size], cols.ranks).tolist()


def rank_missing(
    cs: ClosedStep, cols: StepColumns, asm: StepAssembler, config: ConsistencyConfig
) -> list[Fault]:
    """The silent ranks of a partial step (see the module docstring)."""
    if cs.complete or not cs.progressed:
        return []
    ws = cs.world_size
    reported = int(np.count_nonzero(cols.ranks < ws))
    if reported < math.ceil(config.missing_quorum * ws):
        return []
    silent = [int(r) for r in _absent(cs, cols) if not _alive(asm, int(r), cs.first_ts)]
    if not silent:
        return []
    slots = [s for r in silent if (s := asm.slot(r)) is not None and asm.rank_node[s]]
    nodes = sorted({asm.rank_node[s] for s in slots})
    last = [asm.last_ts[s] for s in slots]
    shown = ", ".join(str(r) for r in silent[:8]) + (", …" if len(silent) > 8 else "")
    who = f"rank {shown}" if len(silent) == 1 else f"{len(silent)} ranks ({shown})"
    where = f" (last seen on {', '.join(nodes[:4])}{', …' if len(nodes) > 4 else ''})" \
        if nodes else " (never seen)"
    return [Fault(
        check="rank_missing", category="availability", entities=tuple(silent),
        summary=(f"{who}{where}: no record of step {cs.step} while {reported} of the "
                 f"{ws} ranks reported it and the job went on"),
        first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step, ranks=tuple(silent),
        nodes=tuple(nodes), observed=float(reported), expected=float(ws),
        score=len(silent) / ws,
        evidence={"world_size": ws, "reported": reported, "missing": len(silent),
                  "last_seen_ts": max(last) if last else None,
                  "wait_s": config.wait_s},
    )]


def step_skew(
    cs: ClosedStep, cols: StepColumns, asm: StepAssembler, config: ConsistencyConfig
) -> list[Fault]:
    """Live ranks whose step trails the job's by ``skew_steps`` or more."""
    k = config.skew_steps
    found: list[tuple[int, str, int, int, float]] = []  # rank, node, its step, job's, ts
    if cs.later_first_ts:
        # Later steps' first record times, made monotonic: the job's step at time t is
        # this step plus the number of later steps begun by t.
        begun = np.maximum.accumulate(np.asarray(cs.later_first_ts))
        ts = cols.timestamps()
        lag = np.searchsorted(begun, ts, side="right")
        for i in np.flatnonzero(lag >= k):
            found.append((int(cols.ranks[i]), cols.nodes[i], cs.step,
                          cs.step + int(lag[i]), float(ts[i])))
    for rank in _absent_known(cs, cols, asm):
        s = asm.slot_of[rank]
        last = asm.last_step[s]
        # last < 0: it loaded a checkpoint and has not stepped yet, nothing to compare.
        if last >= 0 and asm.last_ts[s] >= cs.first_ts and cs.step - last >= k:
            found.append((rank, asm.rank_node[s], last, cs.step, asm.last_ts[s]))
    return [Fault(
        check="step_skew", category="availability", entities=(rank,),
        summary=(f"rank {rank} on {node}: reports step {mine} while the job is at step "
                 f"{job} ({job - mine} steps behind; threshold {k})"),
        first_seen=cs.first_ts, ts=max(ts, cs.decided_ts), step=cs.step, ranks=(rank,),
        nodes=(node,) if node else (), observed=float(mine), expected=float(job),
        score=float(job - mine),
        evidence={"rank_step": mine, "job_step": job, "lag_steps": job - mine},
    ) for rank, node, mine, job, ts in found]


def job_stalled(
    last_step: int, last_step_ts: float, samples_ts: float, config: ConsistencyConfig
) -> Fault | None:
    """The job stalled: GPU samples at ``samples_ts``, no step closed since ``last_step_ts``."""
    idle = samples_ts - last_step_ts
    if idle < config.stall_s:
        return None
    return Fault(
        check="job_stalled", category="info", entities=("*",),
        summary=(f"no step completed for {idle:.0f} s of event time after step {last_step}, "
                 "while the job's GPUs keep reporting"),
        first_seen=last_step_ts, ts=samples_ts, step=last_step, observed=idle,
        expected=config.stall_s, score=idle / config.stall_s,
        evidence={"last_step": last_step, "last_step_ts": last_step_ts,
                  "stalled_s": idle, "stall_s": config.stall_s},
    )
