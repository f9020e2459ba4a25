"""Restart continuity: a resumed job against its own record from before the restart.

Every other reference of the consistency stage starts over when the job restarts (the
assembler's new *epoch*): new code or seeds are legitimate then, and a rank is only
compared with its peers. That leaves open the saboteur's easiest move: change something
for **every** rank and let the whole job restart into it. :class:`RestartContinuity`
remembers the job's own values (:class:`~trainguard.pipeline.consistency.history.JobHistory`)
and, from the first step of a new epoch, compares the resumed run with them:

* ``code_changed``: the job's env fingerprint (the majority over all its ranks) differs
  from the one it ran before the restart. It fails at every step of the restart epoch
  that runs the new code, so its alert stays open until someone approves the change
  (``trainguard change approve``) or the job restarts back to the old code.
* ``restart_divergence``, one finding per quantity:

  - ``lr``: the learning rate (job median) at a replayed step differs from the one the
    same step had before (a schedule is a function of the step), relative tolerance
    ``lr_rtol``; without a replayed step, the lr at the resume jumps from the last one
    before by more than ``lr_jump_slack`` times the schedule's own largest step-to-step
    change (per step of the gap);
  - ``loss`` / ``grad_norm``: over the first ``continuity_steps`` comparable steps, the
    job median departs from the pre-restart value at the same step (or, past the replay,
    from the line through its last steps, extrapolated) by more than the run's own noise
    (a mean robust z above ``continuity_z``) *and* by at least ``continuity_min_effect``
    relative;
  - ``seed``: a replica group's seed fingerprint at a step of the same ``data_epoch``
    differs from the one it had before (fails while that data epoch lasts).

Findings are job-wide: they name no rank and no node (a seed change of only some replica
groups names their ranks), and say in ``summary`` and ``evidence`` what changed, before
and after and by how much. A restart with a different world size compares no
trajectories (a scaled batch legitimately scales lr, loss noise and grad norm).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from trainguard.pipeline.consistency.agreement import short
from trainguard.pipeline.consistency.assembler import ClosedStep
from trainguard.pipeline.consistency.columns import FloatArray, StepColumns, layout_text
from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import Fault
from trainguard.pipeline.consistency.history import (
    HistoryView,
    JobHistory,
    Seeds,
    data_epoch_of,
    group_seeds,
    job_median,
    majority,
)

__all__ = ["RestartContinuity"]

#: Fewer first differences than this before a restart: the run's noise is not known.
_MIN_NOISE_POINTS = 10
#: MAD to standard deviation for a normal distribution.
_MAD_SIGMA = 1.4826


def _noise(values: FloatArray, span: int, rel_floor: float) -> float | None:
    """Robust scale of the step-to-step differences of the last ``span`` finite values.

    The difference of two draws of the same step's noise (before and after a restart)
    has the spread of a first difference, so this is the scale of one comparison.
    """
    x = values[np.isfinite(values)][-(span + 1):]
    if len(x) <= _MIN_NOISE_POINTS:
        return None
    d = np.diff(x)
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(_MAD_SIGMA * mad, rel_floor * abs(float(np.median(x))), 1e-12)


@dataclass(slots=True)
class _Window:
    """One trajectory's comparison over the first steps after a restart."""

    quantity: str
    label: str
    noise: float
    #: The pre-restart trend (a line over its last ``continuity_noise_steps`` steps): the
    #: reference past the replay, where a falling loss must not look like a shift.
    intercept: float
    slope: float
    #: The fitted steps' mean and sum of squared deviations: how uncertain the line is
    #: where it is extrapolated (an error shared by every extrapolated point).
    fit_mean: float = 0.0
    fit_sxx: float = math.inf
    fit_n: int = 1
    z: list[float] = field(default_factory=list)
    #: Steps compared with the extrapolated line (not with a replayed step's value).
    extrapolated: list[int] = field(default_factory=list)
    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    decided: bool = False


def _line_error(w: _Window, n: int) -> float:
    """Variance (in units of ``w.noise`` squared) the extrapolated line adds to the mean.

    A line fitted to ``k`` noisy points and extrapolated ``d`` steps past their centre is
    off by noise * sqrt(1/k + d^2/Sxx), and *every* extrapolated point shares that error:
    averaging more of them does not shrink it. After a short run (a restart at step 11) the
    line through 10 steps, 20 steps ahead, is uncertain by about 1.5 times the noise: a
    20-step mean of it is not the ~0.2 the independent-noise term alone would claim.
    """
    e = len(w.extrapolated)
    if not e or not math.isfinite(w.fit_sxx) or w.fit_sxx <= 0:
        return 0.0 if not e else math.inf
    d = float(np.mean(w.extrapolated)) - w.fit_mean
    return (e / n) ** 2 * (1 / w.fit_n + d * d / w.fit_sxx)


@dataclass(slots=True)
class _Restart:
    """What the job was before its latest restart, and how far the comparison got."""

    resume_step: int
    before: HistoryView | None
    env: str | None
    seeds: dict[int | None, Seeds]
    windows: list[_Window]
    jump_checked: bool = False


class RestartContinuity:
    """One job's history and the comparison of each resumed run with it."""

    def __init__(self, config: ConsistencyConfig, job_id: str = "") -> None:
        self.config = config
        #: Named in the approval command a ``code_changed`` summary suggests.
        self.job_id = job_id
        self.history = JobHistory(config.history_steps)
        self.epoch = 0
        #: The job's env fingerprint (majority) at its latest step.
        self.env: str | None = None
        #: Each replica group's seed fingerprint by data epoch (the last few epochs).
        self.seeds: dict[int | None, Seeds] = {}
        self._restart: _Restart | None = None
        #: Restarts whose pre-restart record was too short (under ~10 steps) to learn the
        #: run's noise: their loss and grad norm are not compared (the stage counts them).
        self.unverifiable = 0

    def evaluate(self, cs: ClosedStep, cols: StepColumns) -> tuple[list[Fault], list[Fault]]:
        """``code_changed`` and ``restart_divergence`` faults of one closed step."""
        if cs.epoch < self.epoch:
            return [], []  # a straggling step of an epoch already left behind
        if cs.epoch != self.epoch:
            self.epoch = cs.epoch
            self._start(cs)
        lr, loss, grad = job_median(cols.lr), job_median(cols.loss), job_median(cols.grad_norm)
        env = majority(cols.env_fingerprint)
        data_epoch = data_epoch_of(cols)
        seeds = group_seeds(cols)
        code: list[Fault] = []
        diverged: list[Fault] = []
        r = self._restart
        if r is not None:
            if r.env is not None and env is not None and env != r.env:
                code.append(self._code_fault(cs, r, env))
            seed = self._seed_fault(cs, cols, r, seeds, data_epoch)
            if seed is not None:
                diverged.append(seed)
            if r.before is not None:
                diverged += self._trajectory(cs, r, r.before, lr, loss, grad)
            if r.before is not None and all(w.decided for w in r.windows) and (
                    cs.step > r.before.last_step + self.config.continuity_steps):
                r.before = None  # nothing left to compare: free the copy
        self.history.record(cs.step, lr, loss, grad, cs.world_size)
        if env is not None:
            self.env = env
        self._remember_seeds(data_epoch, seeds)
        return code, diverged

    # -- restarts ------------------------------------------------------------------------

    def _start(self, cs: ClosedStep) -> None:
        c = self.config
        before = self.history.snapshot()
        windows: list[_Window] = []
        for quantity, label, values in (("loss", "loss", before.loss),
                                        ("grad_norm", "grad norm", before.grad_norm)):
            noise = _noise(values, c.continuity_noise_steps, c.loss_rel_floor)
            if noise is None:
                continue
            ok, span = np.isfinite(values), c.continuity_noise_steps
            x, y = before.steps[ok][-span:], values[ok][-span:]
            slope, intercept = np.polyfit(x - x[-1], y, 1)
            xm = float(np.mean(x))
            windows.append(_Window(quantity, label, noise, float(intercept - slope * x[-1]),
                                   float(slope), fit_mean=xm,
                                   fit_sxx=float(np.sum((x - xm) ** 2)), fit_n=len(x)))
        if len(before) and not windows:
            self.unverifiable += 1
        self._restart = _Restart(
            resume_step=cs.step, before=before if len(before) else None, env=self.env,
            seeds={k: dict(v) for k, v in self.seeds.items()}, windows=windows)

    def _remember_seeds(self, data_epoch: int | None, seeds: Seeds) -> None:
        if not seeds:
            return
        known = self.seeds.get(data_epoch)
        if known is None:
            known = self.seeds[data_epoch] = {}
            while len(self.seeds) > self.config.history_data_epochs:
                del self.seeds[next(iter(self.seeds))]
        known.update(seeds)

    # -- the comparisons -----------------------------------------------------------------

    def _trajectory(self, cs: ClosedStep, r: _Restart, before: HistoryView, lr: float,
                    loss: float, grad: float) -> list[Fault]:
        c = self.config
        i = before.index(cs.step)
        if before.world_size[-1 if i is None else i] != cs.world_size:
            r.before = None  # another world: nothing of its trajectory compares
            return []
        faults: list[Fault] = []
        if i is not None:
            ref = float(before.lr[i])
            if math.isfinite(ref) and math.isfinite(lr) and abs(lr - ref) > c.lr_rtol * abs(ref):
                faults.append(self._lr_fault(cs, r, ref, lr, "replayed"))
        elif not r.jump_checked and cs.step > before.last_step:
            jump = self._lr_jump(cs, r, before, lr)
            if jump is not None:
                faults.append(jump)
        r.jump_checked = True
        past = cs.step - before.last_step
        values = {"loss": loss, "grad_norm": grad}
        for w in r.windows:
            now = values[w.quantity]
            if w.decided or not math.isfinite(now):
                continue
            if i is not None:
                ref = float((before.loss if w.quantity == "loss" else before.grad_norm)[i])
            elif 0 < past <= c.continuity_steps:
                ref = w.intercept + w.slope * cs.step
                w.extrapolated.append(cs.step)
            else:
                ref = math.nan
            if math.isfinite(ref):
                clip = c.continuity_z_clip
                w.z.append(min(clip, max(-clip, (now - ref) / w.noise)))
                w.before.append(ref)
                w.after.append(now)
            if len(w.z) >= c.continuity_steps or past > c.continuity_steps:
                w.decided = True
                fault = self._window_fault(cs, r, w)
                if fault is not None:
                    faults.append(fault)
        return faults

    def _lr_jump(self, cs: ClosedStep, r: _Restart, before: HistoryView,
                 lr: float) -> Fault | None:
        c = self.config
        x = before.lr[np.isfinite(before.lr)][-(c.continuity_noise_steps + 1):]
        if not len(x) or not math.isfinite(lr):
            return None
        last = float(x[-1])
        prev, nxt = x[:-1], x[1:]
        ok = prev != 0
        worst = float(np.max(np.abs(nxt[ok] - prev[ok]) / np.abs(prev[ok]))) if ok.any() else 0.0
        gap = cs.step - before.last_step
        allowed = max(c.lr_rtol, gap * worst * c.lr_jump_slack)
        if last == 0 or abs(lr - last) / abs(last) <= allowed:
            return None
        return self._lr_fault(cs, r, last, lr, "jump", allowed)

    def _lr_fault(self, cs: ClosedStep, r: _Restart, before: float, after: float,
                  how: str, allowed: float | None = None) -> Fault:
        ratio = after / before if before else None
        times = f" (x{ratio:.3g})" if ratio is not None else ""
        if how == "replayed":
            what = (f"the learning rate at replayed step {cs.step} is {after:.6g} after the "
                    f"restart at step {r.resume_step}, {before:.6g} before{times}")
        else:
            what = (f"the learning rate jumped at the resume (step {cs.step}) from "
                    f"{before:.6g} to {after:.6g}{times}, beyond the schedule's own "
                    f"step-to-step change ({allowed or 0:.2g} relative)")
        score = abs(ratio - 1) if ratio is not None else 1.0
        return self._fault(cs, "lr", what, after, before, score, {
            "quantity": "lr", "how": how, "before": before, "after": after,
            "ratio": ratio, "resume_step": r.resume_step, "allowed": allowed})

    def _window_fault(self, cs: ClosedStep, r: _Restart, w: _Window) -> Fault | None:
        c = self.config
        n = len(w.z)
        if n < c.continuity_min_steps:
            return None
        z = float(np.mean(w.z)) / math.sqrt(1 / n + _line_error(w, n))
        mean_before, mean_after = float(np.mean(w.before)), float(np.mean(w.after))
        rel = (mean_after - mean_before) / max(abs(mean_before), 1e-12)
        if abs(z) <= c.continuity_z or abs(rel) < c.continuity_min_effect:
            return None
        what = (f"the job's {w.label} over {n} steps after the restart at step "
                f"{r.resume_step} averages {mean_after:.6g}, {mean_before:.6g} before the "
                f"restart ({rel:+.1%}; z {abs(z):.1f} against the run's noise and the "
                f"uncertainty of its trend)")
        return self._fault(cs, w.quantity, what, mean_after, mean_before, abs(rel), {
            "quantity": w.quantity, "before": mean_before, "after": mean_after,
            "relative_change": rel, "z": z, "noise": w.noise, "steps_compared": n,
            "resume_step": r.resume_step})

    def _seed_fault(self, cs: ClosedStep, cols: StepColumns, r: _Restart, seeds: Seeds,
                    data_epoch: int | None) -> Fault | None:
        before = r.seeds.get(data_epoch)
        if not before or not seeds:
            return None
        changed = sorted(k for k, v in seeds.items() if k in before and before[k] != v)
        if not changed:
            return None
        now = sorted({seeds[k] for k in changed})
        prev = sorted({before[k] for k in changed})
        whole = len(changed) == len([k for k in seeds if k in before])
        if whole:
            ranks: tuple[int, ...] = ()
            where = ""
        else:
            codes = {cols.group_keys.index(k) for k in changed}
            ranks = tuple(int(rk) for rk, g in zip(cols.ranks.tolist(), cols.group.tolist(),
                                                   strict=True) if g in codes)
            where = " of " + ", ".join(layout_text(k).strip(" ()") for k in changed[:4])
        what = (f"the seed fingerprint{where} at step {cs.step} (data epoch "
                f"{data_epoch if data_epoch is not None else 'not reported'}) changed across "
                f"the restart at step {r.resume_step}: {', '.join(map(short, prev))} before, "
                f"{', '.join(map(short, now))} after")
        fault = self._fault(cs, "seed", what, ",".join(now), ",".join(prev), 1.0, {
            "quantity": "seed", "previous": ",".join(prev), "now": ",".join(now),
            "fingerprint": ",".join(now), "data_epoch": data_epoch,
            "groups_changed": len(changed), "resume_step": r.resume_step})
        if ranks:
            named = set(ranks)
            nodes = tuple(sorted({cols.nodes[i] for i, rk in enumerate(cols.ranks.tolist())
                                  if rk in named}))
            return dataclasses.replace(fault, ranks=ranks, nodes=nodes)
        return fault

    def _code_fault(self, cs: ClosedStep, r: _Restart, env: str) -> Fault:
        prev = r.env or ""
        return Fault(
            check="code_changed", category="integrity", entities=(("code_changed", env),),
            summary=(f"the job's env fingerprint changed across the restart at step "
                     f"{r.resume_step}: {short(prev)} before, {short(env)} after (the "
                     f"majority of its ranks); approve it if sanctioned: trainguard change "
                     f"approve --job {self.job_id or 'JOB'} --fingerprint {env} --reason …"),
            first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step,
            observed=env, expected=prev, score=1.0,
            evidence={"previous": prev, "now": env, "fingerprint": env,
                      "resume_step": r.resume_step},
        )

    @staticmethod
    def _fault(cs: ClosedStep, quantity: str, summary: str, observed: float | str,
               expected: float | str, score: float,
               evidence: dict[str, float | str | None]) -> Fault:
        return Fault(
            check="restart_divergence", category="integrity",
            entities=(("restart_divergence", quantity),), summary=summary,
            first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step, observed=observed,
            expected=expected, score=float(min(score, 1e9)), evidence=evidence)
