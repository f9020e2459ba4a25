"""Peer statistics: a rank measured against its peers at the same step, persistently.

Each check turns a step's values into one number per rank relative to the step's peers
(median and MAD across ranks, never the rank's own history, so a job-wide trend such as a
falling loss or a slower phase moves every rank together and fires nothing), then keeps a
small per-rank memory so that only a *persistent* departure fires:

* ``loss_outlier``: a two-sided CUSUM of the loss's robust z, calibrated to the job's own
  noise (:class:`~trainguard.pipeline.consistency.robust.CalibratedCusum`), beyond
  ``loss_cusum_h`` while the rank's loss sits at least ``loss_min_effect`` off its peers'.
* ``local_grad_outlier``: |robust z| of the pre-all-reduce grad norm beyond grad_z in
  grad_k of the last grad_n steps (a bit history per rank).
* ``straggler``: the same calibrated CUSUM (slow side) on compute time against the
  replica group's median, with at least ``straggler_min_effect`` slowdown; the node is
  blamed when all its ranks are.

Loss peers are every rank of the step; gradient and compute-time peers are the rank's
replica group where it is big enough (shards of different sizes compute and reduce
different amounts), else every rank. The three run together on one metrics x ranks
matrix, so a step costs a few dozen numpy calls whatever its size. Each alarm has
hysteresis, so a score hovering at the threshold does not flap. The per-rank memory is
indexed by the assembler's rank slots (:attr:`ClosedStep.slots`), so it costs memory for
the ranks that report, not for the largest rank number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainguard.pipeline.consistency.assembler import ClosedStep
from trainguard.pipeline.consistency.columns import FloatArray, IntArray, StepColumns
from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import Fault
from trainguard.pipeline.consistency.robust import (
    MAD_TO_SIGMA,
    CalibratedCusum,
    UIntArray,
    group_medians,
    push_bits,
    row_medians,
)

__all__ = ["PeerChecks", "PeerFaults"]

_Bools = np.ndarray[Any, np.dtype[np.bool_]]
#: Faults of loss_outlier, local_grad_outlier and straggler; None: the step gave no verdict.
PeerFaults = tuple[list[Fault] | None, list[Fault] | None, list[Fault] | None]


class PeerChecks:
    """Per-rank memory of one job for the three peer-relative checks (arrays by rank slot)."""

    def __init__(self, config: ConsistencyConfig) -> None:
        self.config = config
        self._floors = np.array([config.loss_rel_floor, config.grad_rel_floor, 0.0])
        #: Per metric: the peers' relative spread, smoothed over steps (NaN: none yet).
        self._spread: FloatArray = np.full(3, math.nan)
        #: Rows: loss (0) and compute time (1).
        self.cusum = CalibratedCusum(
            2, clip=config.peer_z_clip, k=(config.loss_cusum_k, config.straggler_cusum_k),
            cap=2 * max(config.loss_cusum_h, config.straggler_cusum_h),
            warmup=config.peer_warmup, null_span=config.peer_null_span,
            effect_span=config.peer_effect_span, sd_floor=config.peer_sd_floor)
        self._h = np.array([[config.loss_cusum_h], [config.straggler_cusum_h]])
        self._min_effect = np.array([[config.loss_min_effect], [config.straggler_min_effect]])
        self.grad_hist: UIntArray = np.zeros(0, dtype=np.uint64)
        #: Per rank slot: loss_outlier high (0) / low (1) and straggler (2) firing.
        self.alarm: np.ndarray[Any, np.dtype[np.bool_]] = np.zeros((3, 0), dtype=np.bool_)
        self.grad_alarm: _Bools = np.zeros(0, dtype=np.bool_)

    @property
    def capacity(self) -> int:
        """Rank slots held in memory."""
        return len(self.grad_hist)

    def evaluate(
        self, cs: ClosedStep, cols: StepColumns, hardware: Callable[[str], bool]
    ) -> PeerFaults:
        """The three checks on one closed step; ``hardware(node)``: its GPUs slowed down."""
        if len(cols) == 0:
            return None, None, None
        rows = self._rows(cs, cols)
        values = cols.peer_values
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            center, scale = self._centers(cols, values)
            stats, ok, hot = self._calibrated(rows, cols, values, center, scale)
            z_grad, grad_count, ok_grad, grad_hot = self._gradients(rows, cols, values, center,
                                                                    scale)
        loss_hot, slow_hot = hot[0], hot[1]
        # A step without a verdict (too few peers) gives None; a healthy one, [].
        loss: list[Fault] | None = [] if ok[0].any() else None
        grad: list[Fault] | None = [] if ok_grad.any() else None
        slow: list[Fault] | None = [] if ok[1].any() else None
        if loss_hot.any() or grad_hot.any() or slow_hot.any():  # rare: build the faults
            center = np.broadcast_to(center, values.shape)
            scale = np.broadcast_to(scale, values.shape)
            loss = [self._loss(cs, cols, int(i), center[0], scale[0], stats)
                    for i in np.flatnonzero(loss_hot)] if loss is not None else None
            grad = [self._grad(cs, cols, int(i), center[1], scale[1], z_grad, grad_count)
                    for i in np.flatnonzero(grad_hot)] if grad is not None else None
            if slow is not None:
                slow = self._stragglers(cs, cols, [int(i) for i in np.flatnonzero(slow_hot)],
                                        center[2], stats, hardware)
        return loss, grad, slow

    def _calibrated(
        self, rows: IntArray | slice, cols: StepColumns, values: FloatArray,
        center: FloatArray, scale: FloatArray,
    ) -> tuple[_Stats, _Bools, _Bools]:
        """loss_outlier and straggler: the calibrated CUSUMs and their alarms (hysteresis).

        Returns the step's statistics, which ranks had a value (rows: loss, compute time)
        and which are firing (rows: loss either side, straggler).
        """
        c = self.config
        # The relative departure from the peers' median and its robust z. A non-finite
        # loss counts as a z at the clip and a departure of 100 %.
        effect = values[0::2] / center[0::2] - 1.0
        z = effect * np.abs(center[0::2]) / scale[0::2]
        if cols.any_nonfinite:
            bad_loss = cols.loss_nonfinite & np.isfinite(center[0])
            z[0, bad_loss], effect[0, bad_loss] = c.peer_z_clip, 1.0
        ok = np.isfinite(z)
        ok[1] &= center[2] > 0
        u = self.cusum.update(rows, z, effect, ok)
        up, down = self.cusum.up[:, rows], self.cusum.down[:, rows]
        eff = self.cusum.effect[:, rows]
        h, low = self._h, self._min_effect
        was = self.alarm[:, rows]
        n = len(cols)
        if not ((up > h / 2).any() or (down[0] > h[0] / 2).any() or was.any()):
            # The usual step: no rank even half-way to an alarm (the hysteresis level),
            # none firing before: nothing fires, nothing holds, the alarms stay off.
            quiet = np.zeros(n, dtype=np.bool_)
            return _Stats(z, u, up, down, eff, quiet), ok, np.zeros((2, n), dtype=np.bool_)
        fire = np.stack([(up[0] > h[0]) & (eff[0] > low[0]),
                         (down[0] > h[0]) & (eff[0] < -low[0]),
                         (up[1] > h[1]) & (eff[1] > low[1])])
        hold = np.stack([(up[0] > h[0] / 2) & (eff[0] > low[0] / 2),
                         (down[0] > h[0] / 2) & (eff[0] < -low[0] / 2),
                         (up[1] > h[1] / 2) & (eff[1] > low[1] / 2)])
        judged = ok[[0, 0, 1]]
        alarm = np.where(judged, fire | (was & hold), was)
        self.alarm[:, rows] = alarm
        hot = np.stack([(alarm[0] | alarm[1]) & ok[0], alarm[2] & ok[1]])
        return _Stats(z, u, up, down, eff, hold[2]), ok, hot

    def _gradients(
        self, rows: IntArray | slice, cols: StepColumns, values: FloatArray,
        center: FloatArray, scale: FloatArray,
    ) -> tuple[FloatArray, IntArray, _Bools, _Bools]:
        """local_grad_outlier: |z| beyond grad_z in grad_k of the last grad_n steps."""
        c = self.config
        z_grad = (values[1] - center[1]) / scale[1]
        if cols.any_nonfinite:
            z_grad[cols.grad_nonfinite & np.isfinite(center[1])] = math.inf
        ok_grad = ~np.isnan(z_grad)
        grad_count = push_bits(self.grad_hist, rows, ok_grad, np.abs(z_grad) > c.grad_z,
                               c.grad_n)
        was = self.grad_alarm[rows]
        grad_alarm = np.where(ok_grad, (grad_count >= c.grad_k) | (was & (grad_count > 0)), was)
        self.grad_alarm[rows] = grad_alarm
        return z_grad, grad_count, ok_grad, grad_alarm & ok_grad

    def _centers(self, cols: StepColumns, values: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per metric and rank: the peers' median and the robust scale of departures from it.

        The scale is relative (departures divided by the median), pooled over every rank
        of the step whatever its group, and smoothed over ``scale_span`` steps; the larger
        of the smoothed and the current value is used. One step of 8 replicas gives a MAD
        anywhere between a fifth and 1.3x the true spread, which alone would make z-scores
        of 5 common; pooling keeps them honest, and taking the current value when larger
        keeps a job-wide burst of noise from looking like many outliers.
        """
        c = self.config
        center = row_medians(values, min_peers=c.min_peers)[:, None]
        if cols.n_groups > 1:
            center = np.repeat(center, len(cols), axis=1)
            for row in (1, 2):  # gradients and compute time: replica groups where big enough
                grouped = group_medians(values[row], cols.group, cols.n_groups,
                                        min_peers=c.min_peers)
                ok = ~np.isnan(grouped)
                center[row, ok] = grouped[ok]
        spread = MAD_TO_SIGMA * row_medians(np.abs(values / center - 1.0),
                                            min_peers=c.min_peers)
        alpha = 2.0 / (c.scale_span + 1)
        pooled = np.where(np.isnan(self._spread), spread,
                          np.where(np.isnan(spread), self._spread,
                                   (1 - alpha) * self._spread + alpha * spread))
        self._spread = pooled
        relative = np.fmax(np.fmax(spread, pooled), self._floors)  # fmax skips NaN
        return center, relative[:, None] * np.abs(center) + 1e-12

    def _loss(
        self, cs: ClosedStep, cols: StepColumns, i: int, center: FloatArray,
        scale: FloatArray, st: _Stats,
    ) -> Fault:
        c = self.config
        value = "non-finite" if cols.loss_nonfinite[i] else f"{cols.loss[i]:.5g}"
        high = st.up[0, i] >= st.down[0, i]
        cusum = float(st.up[0, i] if high else st.down[0, i])
        effect = float(st.effect[0, i])
        return Fault(
            check="loss_outlier", category="integrity", entities=(int(cols.ranks[i]),),
            summary=(f"{cols.who([i])}: loss {value} against its peers' median "
                     f"{center[i]:.5g}; it has sat {abs(effect):.1%} "
                     f"{'above' if high else 'below'} them (moving average), a CUSUM of "
                     f"{cusum:.1f} in units of the job's own loss noise (threshold "
                     f"{c.loss_cusum_h:g}, minimum effect {c.loss_min_effect:.1%})"),
            first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step, ranks=(int(cols.ranks[i]),),
            nodes=(cols.nodes[i],), observed=_num(cols.loss[i]), expected=float(center[i]),
            score=effect,
            evidence={"loss": _num(cols.loss[i]), "peer_median": float(center[i]),
                      "peer_scale": float(scale[i]), "z": _num(st.z[0, i]),
                      "u": _num(st.u[0, i]), "cusum": cusum, "cusum_h": c.loss_cusum_h,
                      "direction": "high" if high else "low", "effect": effect,
                      "min_effect": c.loss_min_effect, "span_steps": c.peer_effect_span},
        )

    def _grad(
        self, cs: ClosedStep, cols: StepColumns, i: int, center: FloatArray,
        scale: FloatArray, z: FloatArray, counts: IntArray,
    ) -> Fault:
        c = self.config
        value = cols.local_grad_norm[i]
        shown = "non-finite" if cols.grad_nonfinite[i] else f"{value:.5g}"
        return Fault(
            check="local_grad_outlier", category="integrity", entities=(int(cols.ranks[i]),),
            summary=(f"{cols.who([i])}: local grad norm {shown} against its peers' median "
                     f"{center[i]:.5g} (robust z {z[i]:+.1f}; beyond ±{c.grad_z} in "
                     f"{counts[i]} of its last {c.grad_n} steps)"),
            first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step, ranks=(int(cols.ranks[i]),),
            nodes=(cols.nodes[i],), observed=_num(value), expected=float(center[i]),
            score=float(min(abs(z[i]), 1e6)),
            evidence={"local_grad_norm": _num(value), "peer_median": float(center[i]),
                      "peer_scale": float(scale[i]), "z": _num(z[i]),
                      "outlier_steps": int(counts[i]), "window_steps": c.grad_n},
        )

    def _stragglers(
        self, cs: ClosedStep, cols: StepColumns, hot: list[int], center: FloatArray,
        st: _Stats, hardware: Callable[[str], bool],
    ) -> list[Fault]:
        """One fault per slow node or per slow rank.

        A node is to blame when every rank on it is at least half-way to firing (the
        hysteresis level): the ranks of a slow node cross the full threshold a few steps
        apart (noise), and blaming them one by one first would scatter one cause over
        many findings.
        """
        by_node: dict[str, list[int]] = {}
        for i in hot:
            by_node.setdefault(cols.nodes[i], []).append(i)
        faults = []
        for node, idx in by_node.items():
            on_node = [i for i, n in enumerate(cols.nodes) if n == node]
            hw = hardware(node)
            if len(on_node) >= 2 and all(st.slow_hold[i] for i in on_node):
                faults.append(self._slow(cs, cols, on_node, center, st, node, hw))
            else:
                faults += [self._slow(cs, cols, [i], center, st, None, hw) for i in idx]
        return faults

    def _slow(
        self, cs: ClosedStep, cols: StepColumns, idx: list[int], center: FloatArray,
        st: _Stats, node: str | None, hardware: bool,
    ) -> Fault:
        c = self.config
        mean_ratio = 1.0 + float(np.mean(st.effect[1, idx]))
        values = cols.compute_time_s[idx]
        med = float(np.median(center[idx]))
        cusum = float(np.min(st.up[1, idx]))
        cause = "; its GPUs report thermal or HW slowdown" if hardware else ""
        if node is not None:
            who = f"node {node} ({cols.who(idx)})"
            what = f"all its ranks compute {mean_ratio:.2f}x"
        else:
            who, what = cols.who(idx), f"compute time {values[0]:.4g} s is {mean_ratio:.2f}x"
        return Fault(
            check="straggler", category="hardware" if hardware else "availability",
            entities=(node,) if node is not None else (int(cols.ranks[idx[0]]),),
            summary=(f"{who}: {what} its peers' median {med:.4g} s (moving average; a "
                     f"CUSUM of {cusum:.1f} in units of the job's own step-time noise, "
                     f"threshold {c.straggler_cusum_h:g}, minimum slowdown "
                     f"{c.straggler_min_effect:.0%}){cause}"),
            first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step, ranks=cols.rank_list(idx),
            nodes=cols.node_list(idx), observed=float(np.mean(values)), expected=med,
            score=mean_ratio,
            evidence={"ratio_ewma": mean_ratio, "perf_score": 1.0 / mean_ratio,
                      "compute_time_s": float(np.mean(values)), "peer_median_s": med,
                      "cusum": cusum, "cusum_h": c.straggler_cusum_h,
                      "min_effect": c.straggler_min_effect, "span_steps": c.peer_effect_span,
                      "hw_slowdown": "yes" if hardware else "no"},
        )

    def _rows(self, cs: ClosedStep, cols: StepColumns) -> IntArray | slice:
        """The rows of the step's ranks in the per-rank arrays (their slots), grown to fit.

        A slice when the slots run in rank order without a gap (ranks that first reported
        in rank order, as a job's first step usually arrives): the per-rank arrays are
        then read and written as views, not gathered and scattered.
        """
        slots = cs.slots
        first, last = slots[0], slots[-1]
        if last - first == len(slots) - 1 and slots == list(range(first, last + 1)):
            self._grow(last + 1)
            return slice(first, last + 1)
        rows = np.asarray(slots, dtype=np.int64)
        self._grow(int(rows.max()) + 1)
        return rows

    def _grow(self, n: int) -> None:
        have = self.capacity
        if n <= have:
            return
        # Doubling: ranks that join a few at a time do not copy the arrays each time.
        extra = max(n, 2 * have) - have
        self.cusum.grow(have + extra)
        self.grad_hist = np.concatenate([self.grad_hist, np.zeros(extra, dtype=np.uint64)])
        self.grad_alarm = np.concatenate([self.grad_alarm, np.zeros(extra, dtype=np.bool_)])
        self.alarm = np.concatenate([self.alarm, np.zeros((3, extra), dtype=np.bool_)], axis=1)


@dataclass(frozen=True)
class _Stats:
    """The calibrated CUSUMs' view of one step (rows: loss, compute time; by step index)."""

    z: FloatArray
    u: FloatArray
    up: FloatArray
    down: FloatArray
    effect: FloatArray
    #: Per rank: its straggler CUSUM and slowdown at least at the hold level.
    slow_hold: _Bools


def _num(value: float) -> float | None:
    """A float for the wire: NaN and infinities (JSON cannot carry them) as None."""
    v = float(value)
    return v if math.isfinite(v) else None
