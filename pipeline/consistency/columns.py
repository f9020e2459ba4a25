"""A closed step as arrays across its ranks: what the vectorized checks read.

One list comprehension per field pulls what the checks need from the step's records;
numbers become float arrays with ``None`` (not reported) as NaN, the parallel layout
becomes a replica-group code per rank, hashes stay Python lists (they are compared with
sets and counters, which beat numpy on strings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainguard.schemas.records import StepRecord

__all__ = ["FloatArray", "IntArray", "StepColumns", "step_columns"]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True, slots=True)
class StepColumns:
    """One step's values, index ``i`` being the ``i``-th reporting rank in rank order."""

    ranks: IntArray
    grad_norm: FloatArray
    lr: FloatArray
    #: Loss, local grad norm and compute time as one 3 x ranks matrix (the peer checks
    #: work on all three at once); :attr:`loss` and the others are its rows.
    peer_values: FloatArray
    #: Replica group per rank: ranks with equal ``(tp_rank, pp_rank)`` share a code; 0 for
    #: everyone when the layout is not reported (pure data parallelism).
    group: IntArray
    n_groups: int
    #: ``(tp_rank, pp_rank)`` of each group code (-1 for not reported): stable across steps.
    group_keys: list[tuple[int, int]]
    nodes: list[str]
    param_checksum: list[str | None]
    env_fingerprint: list[str | None]
    seed_fingerprint: list[str | None]
    #: The rank reported its loss / local grad norm as NaN or infinite.
    loss_nonfinite: np.ndarray[Any, np.dtype[np.bool_]]
    grad_nonfinite: np.ndarray[Any, np.dtype[np.bool_]]
    #: The records, in the same order (for what few checks read only now and then).
    records: Sequence[StepRecord]

    def timestamps(self) -> FloatArray:
        """Each rank's record time (read on demand: only step skew needs it, rarely)."""
        return _floats([r.ts for r in self.records])

    @property
    def loss(self) -> FloatArray:
        """Each rank's loss (NaN: not reported)."""
        return self.peer_values[0]

    @property
    def local_grad_norm(self) -> FloatArray:
        """Each rank's gradient norm before the all-reduce."""
        return self.peer_values[1]

    @property
    def compute_time_s(self) -> FloatArray:
        """Each rank's compute time before waiting for its peers."""
        return self.peer_values[2]

    def __len__(self) -> int:
        return len(self.nodes)

    def who(self, idx: Sequence[int]) -> str:
        """Ranks at indices ``idx`` in words: ``"rank 5 on node-01"``, ``"ranks 4, 9 on …"``."""
        ranks = [int(self.ranks[i]) for i in idx]
        nodes = sorted({self.nodes[i] for i in idx})
        if len(ranks) == 1:
            return f"rank {ranks[0]} on {nodes[0]}"
        shown = ", ".join(str(r) for r in ranks[:6]) + (", …" if len(ranks) > 6 else "")
        where = ", ".join(nodes[:4]) + (f" (+{len(nodes) - 4} nodes)" if len(nodes) > 4 else "")
        return f"{len(ranks)} ranks ({shown}) on {where}"

    def rank_list(self, idx: Sequence[int]) -> tuple[int, ...]:
        """The ranks at indices ``idx``."""
        return tuple(int(self.ranks[i]) for i in idx)

    def node_list(self, idx: Sequence[int]) -> tuple[str, ...]:
        """The distinct nodes of the ranks at indices ``idx``."""
        return tuple(sorted({self.nodes[i] for i in idx}))


def step_columns(records: Sequence[StepRecord]) -> StepColumns:
    """Arrays across ``records`` (one per rank, in rank order)."""
    # One list comprehension per field: cheaper than one attrgetter tuple per record, and
    # it allocates no tuples (which matters to the collector with many records alive).
    # A 1,024-rank step's cost here is mostly memory latency: each comprehension touches
    # one value object per record. Fields only some checks need, now and then (record
    # times, the non-finite lists), are read on demand instead.
    recs = records
    n = len(recs)
    group, group_keys = _groups([r.tp_rank for r in recs], [r.pp_rank for r in recs], n)
    peer_values = _floats([[r.loss for r in recs], [r.local_grad_norm for r in recs],
                           [r.compute_time_s for r in recs]]).reshape(3, n)
    loss_nf = np.zeros(n, dtype=np.bool_)
    grad_nf = np.zeros(n, dtype=np.bool_)
    # A NaN or infinite value arrives as None (NaN here), named in ``nonfinite``.
    for i in np.flatnonzero(np.isnan(peer_values[:2]).any(axis=0)).tolist():
        nonfinite = recs[i].nonfinite
        loss_nf[i] = "loss" in nonfinite
        grad_nf[i] = "local_grad_norm" in nonfinite
    return StepColumns(
        ranks=np.asarray([r.rank for r in recs], dtype=np.int64),
        grad_norm=_floats([r.grad_norm for r in recs]),
        lr=_floats([r.lr for r in recs]),
        peer_values=peer_values,
        group=group, n_groups=len(group_keys), group_keys=group_keys,
        nodes=[r.node for r in recs],
        param_checksum=[r.param_checksum for r in recs],
        env_fingerprint=[r.env_fingerprint for r in recs],
        seed_fingerprint=[r.seed_fingerprint for r in recs],
        loss_nonfinite=loss_nf, grad_nonfinite=grad_nf, records=recs,
    )


def _floats(values: Sequence[Any]) -> FloatArray:
    """Optional numbers (or rows of them) → floats, ``None`` as NaN."""
    try:
        return np.asarray(values, dtype=np.float64)
    except TypeError:  # some value is None: the slower, rarer path
        if values and isinstance(values[0], list):
            return np.asarray([[math.nan if v is None else v for v in row] for row in values],
                              dtype=np.float64)
        return np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)


def _groups(
    tp: Sequence[int | None], pp: Sequence[int | None], n: int
) -> tuple[IntArray, list[tuple[int, int]]]:
    """Replica-group codes from the tensor- and pipeline-parallel ranks, and their keys."""
    if n == 0 or (tp.count(None) == n and pp.count(None) == n):
        return np.zeros(n, dtype=np.int64), [(-1, -1)] if n else []
    t = np.asarray([-1 if v is None else v for v in tp], dtype=np.int64)
    p = np.asarray([-1 if v is None else v for v in pp], dtype=np.int64)
    width = int(p.max()) + 2
    uniq, codes = np.unique((t + 1) * width + (p + 1), return_inverse=True)
    keys = [(int(u) // width - 1, int(u) % width - 1) for u in uniq]
    return codes.astype(np.int64, copy=False).reshape(n), keys
