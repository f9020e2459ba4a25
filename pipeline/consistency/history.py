"""One job's own past: its job-level values per step, kept across restarts (bounded).

Restart continuity (:mod:`~trainguard.pipeline.consistency.continuity`) compares a resumed
run with what the same job did before it restarted, so something must remember the job's
trajectory through the restart epoch that resets every other reference. A
:class:`JobHistory` holds, for the last ``capacity`` steps of the job's *current timeline*,
the job-level values of each closed step: the median learning rate, the median loss, the
median all-reduced grad norm and the world size. The timeline is what the job's steps
say now: a step number seen again (the job resumed from a checkpoint and replays steps)
cuts the timeline there and overwrites what follows, so the live history never holds two
values for a step. Before that happens the continuity check takes a :meth:`snapshot`,
the record of the run before the restart.

The module also computes those values from a closed step (:func:`job_median`,
:func:`majority`, :func:`group_seeds`, :func:`data_epoch_of`).

Memory: five float64 columns of at most ``2 * capacity`` entries (compacted to
``capacity`` when full), about 80 KB per job at the default 2,048 steps. Fingerprints are
not kept per step (they hold still within a data epoch): the continuity check keeps the
last value per replica group and data epoch itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainguard.pipeline.consistency.columns import FloatArray, LayoutKey, StepColumns

__all__ = ["HistoryView", "JobHistory", "Seeds", "data_epoch_of", "group_seeds", "job_median",
           "majority"]

#: A replica group's seed fingerprint, by its layout key.
Seeds = dict[LayoutKey, str]

#: Columns of the history, in order.
_STEP, _LR, _LOSS, _GRAD, _WORLD = range(5)


# -- a closed step's job-level values ----------------------------------------------------


def job_median(values: FloatArray) -> float:
    """The median of the finite ``values`` (NaN when none is)."""
    finite = values[np.isfinite(values)]
    n = len(finite)
    if n == 0:
        return math.nan
    # As ``np.median`` computes it (the middle value, or the mean of the middle two),
    # without its generic machinery: this runs three times per closed step.
    finite.sort()
    if n % 2:
        return float(finite[n // 2])
    return float((finite[n // 2 - 1] + finite[n // 2]) / 2.0)


def majority(values: Sequence[str | None]) -> str | None:
    """The most common non-None value (ties: the larger), None if none is reported."""
    distinct = set(values)
    distinct.discard(None)
    if len(distinct) <= 1:
        return next(iter(distinct), None)
    counts: dict[str, int] = {}
    for v in values:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def data_epoch_of(cols: StepColumns) -> int | None:
    """The data epoch most ranks of the step report (None if none does)."""
    epochs = [r.data_epoch for r in cols.records]
    if epochs.count(None) == len(epochs):
        return None
    counts: dict[int, int] = {}
    for e in epochs:
        if e is not None:
            counts[e] = counts.get(e, 0) + 1
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def group_seeds(cols: StepColumns) -> Seeds:
    """Each replica group's majority seed fingerprint."""
    values = cols.seed_fingerprint
    distinct = set(values)
    if cols.n_groups <= 1 or (len(distinct) == 1 and None not in distinct):
        # The usual case, every rank alike: no per-rank pass.
        seed = majority(values)
        return {} if seed is None else dict.fromkeys(cols.group_keys, seed)
    idx: dict[int, list[str | None]] = {}
    for g, v in zip(cols.group.tolist(), values, strict=True):
        idx.setdefault(g, []).append(v)
    out: Seeds = {}
    for g, vals in idx.items():
        seed = majority(vals)
        if seed is not None:
            out[cols.group_keys[g]] = seed
    return out


@dataclass(frozen=True, slots=True)
class HistoryView:
    """A frozen copy of a job's timeline: parallel arrays, steps increasing."""

    steps: FloatArray
    lr: FloatArray
    loss: FloatArray
    grad_norm: FloatArray
    world_size: FloatArray

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def last_step(self) -> int:
        """The newest step of the timeline (-1 when empty)."""
        return int(self.steps[-1]) if len(self.steps) else -1

    @property
    def first_step(self) -> int:
        """The oldest step still remembered (-1 when empty)."""
        return int(self.steps[0]) if len(self.steps) else -1

    def index(self, step: int) -> int | None:
        """Where ``step`` sits in the arrays; None if it is not remembered."""
        i = int(np.searchsorted(self.steps, step))
        return i if i < len(self.steps) and self.steps[i] == step else None


class JobHistory:
    """The job-level values of the last ``capacity`` steps of a job's timeline."""

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError(f"history capacity must be >= 2 steps, got {capacity}")
        self.capacity = capacity
        self._data = np.full((5, 2 * capacity), math.nan, dtype=np.float64)
        self._n = 0
        #: Steps cut from the timeline because the job went back (replayed) to them.
        self.rewound = 0

    def __len__(self) -> int:
        return self._n

    @property
    def last_step(self) -> int:
        """The newest step recorded (-1 when empty)."""
        return int(self._data[_STEP, self._n - 1]) if self._n else -1

    def record(self, step: int, lr: float, loss: float, grad_norm: float,
               world_size: int) -> None:
        """Add one closed step; a step at or before the newest cuts the timeline there."""
        n = self._n
        if n and step <= self._data[_STEP, n - 1]:
            keep = int(np.searchsorted(self._data[_STEP, :n], step))
            self.rewound += n - keep
            n = keep
        if n == self._data.shape[1]:  # full: keep the newest ``capacity`` steps
            self._data[:, :self.capacity] = self._data[:, n - self.capacity:n]
            n = self.capacity
        self._data[:, n] = (step, lr, loss, grad_norm, world_size)
        self._n = n + 1

    def snapshot(self) -> HistoryView:
        """A frozen copy of the newest ``capacity`` steps (what the job did so far)."""
        start = max(0, self._n - self.capacity)
        cols = self._data[:, start:self._n].copy()
        return HistoryView(steps=cols[_STEP], lr=cols[_LR], loss=cols[_LOSS],
                           grad_norm=cols[_GRAD], world_size=cols[_WORLD])
