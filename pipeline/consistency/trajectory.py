"""Job-wide trajectory: the job against its own recent past (``job_shift``).

Every other integrity check compares a rank with its peers at the same step, so a change
made to every rank at once (the shared config or code edited, all data poisoned, the lr
raised everywhere) moves nothing they see. This module follows each job's aggregate
series, one value per closed step, each the *typical rank's* value so that a one-rank
fault (the peer checks' business) cannot move it:

* ``loss``: the median loss over the ranks;
* ``grad_norm``: the median local (pre-all-reduce) gradient norm; the median all-reduced
  ``grad_norm`` where ranks do not report local norms (one rank's corrupted gradient moves
  the all-reduced norm of every rank: that is ``local_grad_outlier``'s finding);
* ``lr``: the median learning rate;
* ``step_time``: the job's pace, the median compute time plus what the step spent beyond
  its slowest rank's compute (communication); the median ``step_time_s`` where compute
  times are not reported. A straggler or a dataloader stall is not a job-wide shift;
* ``tokens_per_s``: tokens per step (median ``tokens_per_s × step_time_s``) at that pace.

loss, grad_norm, step_time and tokens_per_s go through a
:class:`~trainguard.pipeline.consistency.changepoint.ShiftDetector` each (log values, so
shifts are relative), lr through an
:class:`~trainguard.pipeline.consistency.changepoint.LrJump`. The tests start over
(re-baseline) at a restart (the assembler's epoch), a new ``data_epoch`` and a world-size
change; after a gap without steps (checkpoint save, eval phase) the first
``job_shift_gap_skip`` steps are left out. A detected shift is reported for
``job_shift_hold_steps`` steps (its finding stays open), then its test starts over on the
new level. An lr *drop* is reported as ``info``: step-decay schedules drop by design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from trainguard.pipeline.consistency.assembler import ClosedStep
from trainguard.pipeline.consistency.changepoint import LrJump, Shift, ShiftDetector, ShiftParams
from trainguard.pipeline.consistency.columns import StepColumns
from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import Category, Fault

__all__ = ["METRICS", "Aggregate", "TrajectoryWatch", "aggregate"]

#: The CUSUM-tested series, in order: name, category, what it is in words.
METRICS: Final = (
    ("loss", "integrity", "median loss"),
    ("grad_norm", "integrity", "median gradient norm"),
    ("step_time", "availability", "step time (median rank's pace)"),
    ("tokens_per_s", "availability", "tokens/s (at the median rank's pace)"),
)
#: Records read for the fields equal on every rank (lr, step time, tokens, data epoch):
#: their median over ~8 ranks spread over the job is robust to a few forged ones.
_SAMPLE = 8


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One closed step's job-level values (NaN: not reported)."""

    values: tuple[float, float, float, float]
    lr: float
    data_epoch: int | None


def _median(values: list[float]) -> float:
    values.sort()
    n = len(values)
    return math.nan if n == 0 else 0.5 * (values[(n - 1) // 2] + values[n // 2])


def aggregate(cs: ClosedStep, cols: StepColumns, quorum: float) -> Aggregate | None:
    """The job's values at ``cs``; None when fewer than ``quorum`` of the world reported."""
    n = len(cols)
    if n == 0 or n < quorum * cs.world_size:
        return None
    ordered = np.sort(cols.peer_values, axis=1)  # loss, local grad norm, compute; NaN last
    if not np.isnan(ordered[:, -1]).any():  # every rank reported all three: plain slices
        med = (0.5 * (ordered[:, (n - 1) // 2] + ordered[:, n // 2])).tolist()
        slowest = float(ordered[2, -1])
        n_grad = n_compute = n
    else:
        counts = np.isfinite(ordered).sum(axis=1)
        at = np.arange(3)
        med = (0.5 * (ordered[at, np.maximum((counts - 1) // 2, 0)]
                      + ordered[at, np.minimum(counts // 2, n - 1)])).tolist()
        slowest = float(ordered[2, max(int(counts[2]) - 1, 0)])
        n_grad, n_compute = int(counts[1]), int(counts[2])
    recs = cols.records
    sample = recs[:: max(1, n // _SAMPLE)]
    if 2 * n_grad < n:  # local norms not reported: the all-reduced one
        med[1] = _median([r.grad_norm for r in sample if r.grad_norm is not None])
    step_time = _median([r.step_time_s for r in sample if r.step_time_s is not None])
    tokens = _median([r.tokens_per_s * r.step_time_s for r in sample
                      if r.tokens_per_s is not None and r.step_time_s is not None])
    pace = step_time
    if 2 * n_compute >= n and math.isfinite(step_time):
        pace = med[2] + max(0.0, step_time - slowest)
    epochs = [r.data_epoch for r in sample if r.data_epoch is not None]
    lr = _median([r.lr for r in sample if r.lr is not None])
    return Aggregate(values=(med[0], med[1], pace, tokens / pace if pace > 0 else math.nan),
                     lr=lr, data_epoch=max(epochs) if epochs else None)


class TrajectoryWatch:
    """One job's job-wide shift tests (see the module docstring)."""

    def __init__(self, config: ConsistencyConfig) -> None:
        c = self.config = config
        base = ShiftParams(window=c.job_shift_window, lag=c.job_shift_lag,
                           min_ref=c.job_shift_min_ref, k=c.job_shift_k, h=c.job_shift_h,
                           clip=c.job_shift_clip, sigma_floor=c.job_shift_sigma_floor,
                           curve_t=c.job_shift_curve_t)
        effects = (c.job_shift_loss_effect, c.job_shift_grad_effect, c.job_shift_time_effect,
                   c.job_shift_time_effect)
        # Step time matters when slower, tokens/s when lower; loss and gradients both ways.
        sides = ((True, True), (True, True), (True, False), (False, True))
        self.detectors = [ShiftDetector(replace(base, min_effect=e, up=up, down=down))
                          for e, (up, down) in zip(effects, sides, strict=True)]
        self.lr = LrJump(c.job_shift_lr_jump)
        #: Per metric (and "lr" at index 4): the fault being reported, and steps left.
        self.holds: dict[int, tuple[Fault, int]] = {}
        self._key: tuple[int, int | None, int] | None = None
        self._last_ts = math.nan
        self._interval = math.nan
        self._skip = 0

    def evaluate(self, cs: ClosedStep, cols: StepColumns) -> list[Fault] | None:
        """The faults of step ``cs`` (held ones included); None: no verdict at this step."""
        agg = aggregate(cs, cols, self.config.job_shift_quorum)
        if agg is None:
            return None
        key = (cs.epoch, agg.data_epoch, cs.world_size)
        if key != self._key:
            self._key = key
            self.reset()
        self._gap(cs.first_ts)
        out: list[Fault] = []
        for i in list(self.holds):
            fault, left = self.holds[i]
            if left <= 1:
                del self.holds[i]
                (self.lr if i == len(METRICS) else self.detectors[i]).reset()
            else:
                self.holds[i] = (fault, left - 1)
        if self._skip:
            self._skip -= 1
        else:
            x = float(cs.step)
            for i, det in enumerate(self.detectors):
                value = agg.values[i]
                if i in self.holds or not (value > 0 and math.isfinite(value)):
                    continue
                shift = det.update(x, math.log(value))
                if shift is not None:
                    self.holds[i] = (self._fault(cs, i, shift), self.config.job_shift_hold_steps)
            if len(METRICS) not in self.holds and math.isfinite(agg.lr):
                jump = self.lr.update(x, agg.lr)
                if jump is not None:
                    fault = _lr_fault(cs, agg.lr, *jump)
                    if fault.category == "info":
                        out.append(fault)
                    else:
                        self.holds[len(METRICS)] = (fault, self.config.job_shift_hold_steps)
        # Held shifts carry this step's time, so the tracker re-sends them every repeat_s.
        now = cs.decided_ts
        return out + [f if f.ts == now else replace(f, ts=now) for f, _ in self.holds.values()]

    def reset(self) -> None:
        """Start over: every test re-baselines, nothing is held."""
        for det in self.detectors:
            det.reset()
        self.lr.reset()
        self.holds.clear()
        self._last_ts = self._interval = math.nan
        self._skip = 0

    def _gap(self, ts: float) -> None:
        """After a stretch without steps, leave the next few out (the first is often slow)."""
        dt = ts - self._last_ts
        self._last_ts = ts
        if not dt >= 0:  # the first step, or NaN
            return
        interval = self._interval
        if dt > max(self.config.job_shift_gap_s, 4.0 * (interval if interval > 0 else 0.0)):
            self._skip = self.config.job_shift_gap_skip
        else:
            self._interval = dt if math.isnan(interval) else interval + 0.05 * (dt - interval)

    def _fault(self, cs: ClosedStep, i: int, shift: Shift) -> Fault:
        name, category, words = METRICS[i]
        cat: Category = "integrity" if category == "integrity" else "availability"
        verb = "rose" if shift.direction > 0 else "fell"
        pct, noise = 100 * shift.change, 100 * shift.sigma
        summary = (f"job-wide {words} {verb} {abs(pct):.1f} % since step {shift.since:.0f} "
                   f"({shift.expected:.4g} -> {shift.observed:.4g}); the run's own "
                   f"step-to-step noise is {noise:.2f} %, and every rank moved together")
        return Fault(
            check="job_shift", category=cat, entities=(("job_shift", name),), summary=summary,
            first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step,
            observed=shift.observed, expected=shift.expected, score=shift.score,
            evidence={"metric": name, "direction": "up" if shift.direction > 0 else "down",
                      "since_step": shift.since, "change_pct": round(pct, 3),
                      "noise_pct": round(noise, 4), "cusum": round(shift.score, 2)})


def _lr_fault(cs: ClosedStep, lr: float, ratio: float, expected: float) -> Fault:
    """A jump up (integrity) or a drop (info: step-decay schedules drop by design)."""
    up = ratio > 1
    cat: Category = "integrity" if up else "info"
    summary = (f"job-wide learning rate {'jumped' if up else 'dropped'} x{ratio:.3g} at step "
               f"{cs.step} ({expected:.4g} expected from the schedule so far, {lr:.4g} "
               "reported), on every rank alike"
               + ("" if up else "; a step-decay milestone does this"))
    return Fault(
        check="job_shift", category=cat, entities=(("job_shift", "lr" if up else "lr_drop"),),
        summary=summary, first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step,
        observed=lr, expected=expected, score=ratio,
        evidence={"metric": "lr", "direction": "up" if up else "down",
                  "since_step": float(cs.step), "change_pct": round(100 * (ratio - 1), 3)})
