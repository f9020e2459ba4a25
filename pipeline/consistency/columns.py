"""A closed step as arrays across its ranks: what the vectorized checks read.

One list comprehension per field pulls what the checks need from the step's records;
numbers become float arrays with ``None`` (not reported) as NaN, the parallel layout
(``tp_rank``, ``pp_rank``, ``shard``, ``ep_rank``) becomes a replica-group code per rank,
hashes stay Python lists (they are compared with
sets and counters, which beat numpy on strings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainguard.schemas.records import StepRecord

__all__ = ["FloatArray", "IntArray", "LayoutKey", "StepColumns", "layout_text", "step_columns"]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
#: ``(tp_rank, pp_rank, shard, ep_rank)`` of a replica group, -1 for not reported.
LayoutKey = tuple[int, int, int, int]
#: The key of the one group of a job that reports no layout (pure data parallelism).
NO_LAYOUT: LayoutKey = (-1, -1, -1, -1)
_LAYOUT_NAMES = ("tp", "pp", "shard", "ep")


def layout_text(key: LayoutKey) -> str:
    """A replica group for a sentence: ``" (tp 0, pp 1, shard 3)"``; ``""`` without a layout."""
    parts = [f"{name} {v}" for name, v in zip(_LAYOUT_NAMES, key, strict=True) if v >= 0]
    return f" ({', '.join(parts)})" if parts else ""


@dataclass(frozen=True, slots=True)
class StepColumns:
    """One step's values, index ``i`` being the ``i``-th reporting rank in rank order."""

    ranks: IntArray
    grad_norm: FloatArray
    lr: FloatArray
    #: Loss, local grad norm and compute time as one 3 x ranks matrix (the peer checks
    #: work on all three at once); :attr:`loss` and the others are its rows.
    peer_values: FloatArray
    #: Replica group per rank: ranks with equal ``(tp_rank, pp_rank, shard, ep_rank)``
    #: share a code; 0 for everyone when the layout is not reported (pure data
    #: parallelism). A sharded job's replicas are the ranks holding the same shard.
    group: IntArray
    n_groups: int
    #: The layout key of each group code (-1 for not reported): stable across steps.
    group_keys: list[LayoutKey]
    nodes: list[str]
    param_checksum: list[str | None]
    env_fingerprint: list[str | None]
    seed_fingerprint: list[str | None]
    #: The rank reported its loss / local grad norm as NaN or infinite.
    loss_nonfinite: np.ndarray[Any, np.dtype[np.bool_]]
    grad_nonfinite: np.ndarray[Any, np.dtype[np.bool_]]
    #: The records, in the same order (for what few checks read only now and then).
    records: Sequence[StepRecord]
    #: Some rank reported its loss or local grad norm non-finite (see the two above).
    any_nonfinite: bool = True

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
        ranks = self.ranks[np.asarray(idx, dtype=np.intp)].tolist()
        nodes = sorted({self.nodes[i] for i in idx})
        if len(ranks) == 1:
            return f"rank {ranks[0]} on {nodes[0]}"
        shown = ", ".join(str(r) for r in ranks[:6]) + (", …" if len(ranks) > 6 else "")
        where = ", ".join(nodes[:4]) + (f" (+{len(nodes) - 4} nodes)" if len(nodes) > 4 else "")
        return f"{len(ranks)} ranks ({shown}) on {where}"

    def rank_list(self, idx: Sequence[int]) -> tuple[int, ...]:
        """The ranks at indices ``idx``."""
        return tuple(self.ranks[np.asarray(idx, dtype=np.intp)].tolist())

    def node_list(self, idx: Sequence[int]) -> tuple[str, ...]:
        """The distinct nodes of the ranks at indices ``idx``."""
        return tuple(sorted({self.nodes[i] for i in idx}))


def step_columns(records: Sequence[StepRecord],
                 ranks: Sequence[int] | None = None) -> StepColumns:
    """Arrays across ``records`` (one per rank, in rank order); ``ranks``: their ranks."""
    # One list comprehension per field: cheaper than one attrgetter tuple per record, and
    # it allocates no tuples (which matters to the collector with many records alive).
    # A 1,024-rank step's cost here is mostly memory latency: each comprehension touches
    # one value object per record. Fields only some checks need, now and then (record
    # times, the non-finite lists), are read on demand instead.
    recs = records
    n = len(recs)
    # The usual data-parallel job reports no layout: one filtering pass says so (as cheap
    # as the two it replaces), and only a job with a layout has its four coordinates read.
    if [r for r in recs if r.tp_rank is not None or r.pp_rank is not None
            or r.shard is not None or r.ep_rank is not None]:
        group, group_keys = _groups([[r.tp_rank for r in recs], [r.pp_rank for r in recs],
                                     [r.shard for r in recs], [r.ep_rank for r in recs]], n)
    else:
        group, group_keys = np.zeros(n, dtype=np.int64), [NO_LAYOUT] if n else []
    # Five number columns in one conversion: loss, local grad norm, compute time (the peer
    # checks' matrix), grad norm and learning rate; the last two are views of it.
    numbers = _float_rows([[r.loss for r in recs], [r.local_grad_norm for r in recs],
                           [r.compute_time_s for r in recs], [r.grad_norm for r in recs],
                           [r.lr for r in recs]], n)
    peer_values = numbers[:3]
    loss_nf = np.zeros(n, dtype=np.bool_)
    grad_nf = np.zeros(n, dtype=np.bool_)
    # A NaN or infinite value arrives as None (NaN here), named in ``nonfinite``.
    nan_any = np.isnan(peer_values[0]) | np.isnan(peer_values[1])
    suspects = np.flatnonzero(nan_any)
    if len(suspects) > 32:  # a field nobody reports: look only at ranks that name one
        candidates = [i for i, r in enumerate(recs) if r.nonfinite and nan_any[i]]
    else:
        candidates = suspects.tolist()
    any_nf = False
    for i in candidates:
        nonfinite = recs[i].nonfinite
        if nonfinite:
            loss_nf[i] = "loss" in nonfinite
            grad_nf[i] = "local_grad_norm" in nonfinite
            any_nf = any_nf or bool(loss_nf[i] or grad_nf[i])
    return StepColumns(
        ranks=np.asarray([r.rank for r in recs] if ranks is None else ranks, dtype=np.int64),
        grad_norm=numbers[3],
        lr=numbers[4],
        peer_values=peer_values,
        group=group, n_groups=len(group_keys), group_keys=group_keys,
        nodes=[r.node for r in recs],
        param_checksum=[r.param_checksum for r in recs],
        env_fingerprint=[r.env_fingerprint for r in recs],
        seed_fingerprint=[r.seed_fingerprint for r in recs],
        loss_nonfinite=loss_nf, grad_nonfinite=grad_nf, records=recs,
        any_nonfinite=any_nf,
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


def _float_rows(rows: list[list[Any]], n: int) -> FloatArray:
    """Rows of optional numbers → a rows x n float matrix, ``None`` as NaN.

    A field nobody reports (many trainers send no local grad norm or compute time) is
    a row of NaN without a conversion that fails on its first ``None`` (a failed
    conversion of the whole matrix costs more than converting it); only a row with some
    ``None`` and some numbers is converted value by value.
    """
    if n == 0:
        return np.empty((len(rows), 0), dtype=np.float64)
    if all(row[0] is not None and row[-1] is not None for row in rows):
        try:
            return np.asarray(rows, dtype=np.float64)
        except TypeError:  # some value in the middle is None
            pass
    out = np.empty((len(rows), n), dtype=np.float64)
    for k, row in enumerate(rows):
        if row[0] is None and row.count(None) == n:
            out[k] = math.nan
            continue
        try:
            out[k] = row
        except TypeError:  # some ranks report it, some do not
            out[k] = [math.nan if v is None else v for v in row]
    return out


def _groups(layout: list[list[int | None]], n: int) -> tuple[IntArray, list[LayoutKey]]:
    """Replica-group codes from the four coordinate columns (None: -1), and their keys."""
    coords = np.zeros((4, n), dtype=np.int64)  # 0: not reported (values are shifted by 1)
    for row, values in zip(coords, layout, strict=True):
        if values.count(None) == n:
            continue
        try:
            row[:] = np.asarray(values, dtype=np.int64) + 1
        except TypeError:  # some ranks report it, some do not
            row[:] = [0 if v is None else v + 1 for v in values]
    widths = coords.max(axis=1) + 1
    rows: list[list[int]]
    if float(np.prod(widths.astype(np.float64))) < 2.0**62:
        # Mixed radix: one int64 per rank, and one 1-D unique (far cheaper than axis=0).
        radix = np.concatenate([np.cumprod(widths[::-1])[::-1][1:], [1]])
        uniq, codes = np.unique(radix @ coords, return_inverse=True)
        rows = [[int(u) // int(m) % int(w) for m, w in zip(radix, widths, strict=True)]
                for u in uniq]
    else:  # coordinates too large to pack (only forged ones are): rows as they are
        found, codes = np.unique(coords.T, axis=0, return_inverse=True)
        rows = found.tolist()
    keys: list[LayoutKey] = [(a - 1, b - 1, c - 1, d - 1) for a, b, c, d in rows]
    return codes.astype(np.int64, copy=False).reshape(n), keys
