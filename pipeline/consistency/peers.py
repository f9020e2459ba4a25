"""Peer statistics: a rank measured against its peers at the same step, persistently.

Each check turns a step's values into one number per rank relative to the step's peers
(median and MAD across ranks, never the rank's own history, so a job-wide trend such as a
falling loss or a slower phase moves every rank together and fires nothing), then keeps a
small per-rank memory so that only a *persistent* departure fires:

* ``loss_outlier``: robust z of the loss, clipped, into an EWMA; fires on |EWMA| > loss_z.
* ``local_grad_outlier``: |robust z| of the pre-all-reduce grad norm beyond grad_z in
  grad_k of the last grad_n steps (a bit history per rank).
* ``straggler``: compute time over the peers' median beyond straggler_ratio in
  straggler_k of the last straggler_n steps; the node is blamed when all its ranks are.

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
from typing import Any

import numpy as np

from trainguard.pipeline.consistency.assembler import ClosedStep
from trainguard.pipeline.consistency.columns import FloatArray, IntArray, StepColumns
from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import Fault
from trainguard.pipeline.consistency.robust import (
    MAD_TO_SIGMA,
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
        self.loss_ewma: FloatArray = np.zeros(0)
        self.loss_steps: IntArray = np.zeros(0, dtype=np.int64)
        self.grad_hist: UIntArray = np.zeros(0, dtype=np.uint64)
        self.slow_hist: UIntArray = np.zeros(0, dtype=np.uint64)
        self.slow_ratio: FloatArray = np.zeros(0)
        self.loss_alarm: _Bools = np.zeros(0, dtype=np.bool_)
        self.grad_alarm: _Bools = np.zeros(0, dtype=np.bool_)
        self.slow_alarm: _Bools = np.zeros(0, dtype=np.bool_)

    def evaluate(
        self, cs: ClosedStep, cols: StepColumns, hardware: Callable[[str], bool]
    ) -> PeerFaults:
        """The three checks on one closed step; ``hardware(node)``: its GPUs slowed down."""
        c = self.config
        n = len(cols)
        if n == 0:
            return None, None, None
        rows = self._rows(cs, cols)
        values = cols.peer_values
        with np.errstate(invalid="ignore", divide="ignore"):
            center, scale = self._centers(cols, values)
            # loss_outlier: clipped robust z into an EWMA. Started from 0 and not bias-
            # corrected: the first steps weigh less, a more conservative warm-up.
            clip = c.loss_z_clip  # min/max: np.clip's wrapper costs more on small arrays
            z_loss = np.maximum(np.minimum((values[0] - center[0]) / scale[0], clip), -clip)
            z_loss[cols.loss_nonfinite & np.isfinite(center[0])] = c.loss_z_clip
            ok_loss = np.isfinite(z_loss)
            alpha = 2.0 / (c.loss_span + 1)
            old = self.loss_ewma[rows]
            ewma = np.where(ok_loss, (1 - alpha) * old + alpha * z_loss, old)
            steps = self.loss_steps[rows] + ok_loss
            level = np.abs(ewma)
            was = self.loss_alarm[rows]
            loss_alarm = np.where(ok_loss, ((level > c.loss_z) & (steps >= c.loss_min_steps))
                                  | (was & (level > c.loss_z / 2)), was)
            self.loss_ewma[rows], self.loss_steps[rows] = ewma, steps
            self.loss_alarm[rows] = loss_alarm
            # local_grad_outlier: |z| beyond grad_z in grad_k of the last grad_n steps.
            z_grad = (values[1] - center[1]) / scale[1]
            z_grad[cols.grad_nonfinite & np.isfinite(center[1])] = math.inf
            ok_grad = ~np.isnan(z_grad)
            grad_count = push_bits(self.grad_hist, rows, ok_grad, np.abs(z_grad) > c.grad_z,
                               c.grad_n)
            was = self.grad_alarm[rows]
            grad_alarm = np.where(ok_grad, (grad_count >= c.grad_k) | (was & (grad_count > 0)),
                                  was)
            self.grad_alarm[rows] = grad_alarm
            # straggler: compute time over the peers' median, straggler_k of straggler_n.
            ratio = values[2] / center[2]
            ok_slow = np.isfinite(ratio) & (center[2] > 0)
            slow_count = push_bits(self.slow_hist, rows, ok_slow, ratio > c.straggler_ratio,
                               c.straggler_n)
            beta = 2.0 / (c.straggler_n + 1)
            old = self.slow_ratio[rows]
            smooth = np.where(ok_slow, (1 - beta) * old + beta * np.minimum(ratio, 10.0), old)
            self.slow_ratio[rows] = smooth
            was = self.slow_alarm[rows]
            slow_alarm = np.where(ok_slow, (slow_count >= c.straggler_k)
                                  | (was & (slow_count > c.straggler_n // 2)), was)
            self.slow_alarm[rows] = slow_alarm
        loss_hot, grad_hot, slow_hot = loss_alarm & ok_loss, grad_alarm & ok_grad, \
            slow_alarm & ok_slow
        # A step without a verdict (too few peers) gives None; a healthy one, [].
        loss: list[Fault] | None = [] if ok_loss.any() else None
        grad: list[Fault] | None = [] if ok_grad.any() else None
        slow: list[Fault] | None = [] if ok_slow.any() else None
        if loss_hot.any() or grad_hot.any() or slow_hot.any():  # rare: build the faults
            center = np.broadcast_to(center, values.shape)
            scale = np.broadcast_to(scale, values.shape)
            loss = [self._loss(cs, cols, int(i), center[0], scale[0], z_loss, ewma, steps)
                    for i in np.flatnonzero(loss_hot)] if loss is not None else None
            grad = [self._grad(cs, cols, int(i), center[1], scale[1], z_grad, grad_count)
                    for i in np.flatnonzero(grad_hot)] if grad is not None else None
            if slow is not None:
                slow = self._stragglers(cs, cols, [int(i) for i in np.flatnonzero(slow_hot)],
                                        center[2], smooth, slow_count, hardware)
        return loss, grad, slow

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
        scale: FloatArray, z: FloatArray, ewma: FloatArray, steps: IntArray,
    ) -> Fault:
        c = self.config
        value = "non-finite" if cols.loss_nonfinite[i] else f"{cols.loss[i]:.5g}"
        return Fault(
            check="loss_outlier", category="integrity", entities=(int(cols.ranks[i]),),
            summary=(f"{cols.who([i])}: loss {value} against its peers' median "
                     f"{center[i]:.5g}; its robust z-score averaged {ewma[i]:+.2f} over "
                     f"~{c.loss_span} steps (threshold ±{c.loss_z})"),
            first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step, ranks=(int(cols.ranks[i]),),
            nodes=(cols.nodes[i],), observed=_num(cols.loss[i]), expected=float(center[i]),
            score=float(ewma[i]),
            evidence={"loss": _num(cols.loss[i]), "peer_median": float(center[i]),
                      "peer_scale": float(scale[i]), "z": float(z[i]),
                      "z_ewma": float(ewma[i]), "span_steps": c.loss_span,
                      "steps_seen": int(steps[i])},
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
        smooth: FloatArray, counts: IntArray, hardware: Callable[[str], bool],
    ) -> list[Fault]:
        """One fault per slow node or per slow rank.

        A node is to blame when every rank on it was slow in at least half of its recent
        steps: the ranks of a slow node cross the full threshold a few steps apart (noise),
        and blaming them one by one first would scatter one cause over many findings.
        """
        by_node: dict[str, list[int]] = {}
        for i in hot:
            by_node.setdefault(cols.nodes[i], []).append(i)
        half = self.config.straggler_n // 2
        faults = []
        for node, idx in by_node.items():
            on_node = [i for i, n in enumerate(cols.nodes) if n == node]
            hw = hardware(node)
            if len(on_node) >= 2 and all(counts[i] >= half for i in on_node):
                faults.append(self._slow(cs, cols, on_node, center, smooth, counts, node, hw))
            else:
                faults += [self._slow(cs, cols, [i], center, smooth, counts, None, hw)
                           for i in idx]
        return faults

    def _slow(
        self, cs: ClosedStep, cols: StepColumns, idx: list[int], center: FloatArray,
        smooth: FloatArray, counts: IntArray, node: str | None, hardware: bool,
    ) -> Fault:
        c = self.config
        mean_ratio = float(np.mean(smooth[idx]))
        values = cols.compute_time_s[idx]
        med = float(np.median(center[idx]))
        slow_steps = int(np.min(counts[idx]))
        cause = "; its GPUs report thermal or HW slowdown" if hardware else ""
        if node is not None:
            who = f"node {node} ({cols.who(idx)})"
            what = f"all its ranks compute {mean_ratio:.2f}x"
        else:
            who, what = cols.who(idx), f"compute time {values[0]:.4g} s is {mean_ratio:.2f}x"
        return Fault(
            check="straggler", category="hardware" if hardware else "availability",
            entities=(node,) if node is not None else (int(cols.ranks[idx[0]]),),
            summary=(f"{who}: {what} its peers' median {med:.4g} s (above "
                     f"{c.straggler_ratio}x in {slow_steps} of the last {c.straggler_n} "
                     f"steps){cause}"),
            first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step, ranks=cols.rank_list(idx),
            nodes=cols.node_list(idx), observed=float(np.mean(values)), expected=med,
            score=mean_ratio,
            evidence={"ratio_ewma": mean_ratio, "perf_score": 1.0 / mean_ratio,
                      "compute_time_s": float(np.mean(values)), "peer_median_s": med,
                      "slow_steps": slow_steps, "window_steps": c.straggler_n,
                      "hw_slowdown": "yes" if hardware else "no"},
        )

    def _rows(self, cs: ClosedStep, cols: StepColumns) -> IntArray:
        """The rows of the step's ranks in the per-rank arrays (their slots), grown to fit."""
        rows = np.asarray(cs.slots, dtype=np.int64)
        self._grow(int(rows.max()) + 1)
        return rows

    def _grow(self, n: int) -> None:
        if n <= len(self.loss_ewma):
            return
        # Doubling: ranks that join a few at a time do not copy the arrays each time.
        extra = max(n, 2 * len(self.loss_ewma)) - len(self.loss_ewma)
        self.loss_ewma = np.concatenate([self.loss_ewma, np.zeros(extra)])
        self.loss_steps = np.concatenate([self.loss_steps, np.zeros(extra, dtype=np.int64)])
        self.slow_ratio = np.concatenate([self.slow_ratio, np.ones(extra)])
        for name in ("loss_alarm", "grad_alarm", "slow_alarm"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(extra, bool)]))
        for name in ("grad_hist", "slow_hist"):
            setattr(self, name,
                    np.concatenate([getattr(self, name), np.zeros(extra, dtype=np.uint64)]))


def _num(value: float) -> float | None:
    """A float for the wire: NaN and infinities (JSON cannot carry them) as None."""
    v = float(value)
    return v if math.isfinite(v) else None
