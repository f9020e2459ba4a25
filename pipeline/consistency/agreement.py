"""Agreement checks: what replicas (or all ranks) must hold bit-equal at every step.

* ``param_divergence``: replicas (equal ``(tp_rank, pp_rank, shard, ep_rank)``: a sharded
  job compares shard by shard) disagree on the parameter checksum of the same step
  (``checksum_step`` when the trainer reports it late); the minority of the replica group
  is blamed.
* ``grad_norm_mismatch`` / ``lr_mismatch``: the all-reduced grad norm or the learning rate
  differs across ranks beyond a relative tolerance; the minority is blamed.

(``code_fingerprint`` and ``seed_mismatch`` vote the same way; they also remember the
previous value, so they live in :mod:`trainguard.pipeline.consistency.fingerprints`.)

A majority needs a strict plurality: with two voters that differ (or a tie) every voter is
blamed and the summary says there was no majority. Every check has a set-based fast path
for the usual case where everyone agrees, so it costs microseconds per step.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from trainguard.pipeline.consistency.assembler import ClosedStep
from trainguard.pipeline.consistency.columns import FloatArray, StepColumns, layout_text
from trainguard.pipeline.consistency.findings import Fault
from trainguard.schemas.records import CheckName

__all__ = [
    "Split", "disagreeing_groups", "majority_split", "param_divergence", "short",
    "value_mismatch",
]


def short(value: str | None) -> str:
    """A hash shortened for a sentence: ``"9f3a1c0e…"``."""
    if value is None:
        return "none"
    return value if len(value) <= 10 else value[:8] + "…"


@dataclass(frozen=True, slots=True)
class Split:
    """How one group voted: the majority value (None: no majority) and the indices blamed."""

    majority: Hashable | None
    culprits: list[int]
    voters: int
    majority_count: int
    distinct: int


def majority_split(values: Sequence[Hashable | None], idx: Sequence[int]) -> Split | None:
    """Vote of ``values[i]`` over ``i`` in ``idx`` (``None`` abstains); None if all agree."""
    counts: dict[Hashable, int] = {}
    for i in idx:
        v = values[i]
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    if len(counts) <= 1:
        return None
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    voters = sum(counts.values())
    (top, first), (_, second) = ranked[0], ranked[1]
    if first > second:
        culprits = [i for i in idx if values[i] is not None and values[i] != top]
        return Split(top, culprits, voters, first, len(counts))
    return Split(None, [i for i in idx if values[i] is not None], voters, first, len(counts))


def disagreeing_groups(cols: StepColumns, values: Sequence[str | None]) -> dict[int, list[int]]:
    """Indices of every replica group holding more than one value (usually none)."""
    if cols.n_groups <= 1:
        distinct = set(values)
        distinct.discard(None)
        return {0: list(range(len(values)))} if len(distinct) > 1 else {}
    codes = cols.group.tolist()
    seen: dict[int, int] = {}
    for g, v in set(zip(codes, values, strict=True)):
        if v is not None:
            seen[g] = seen.get(g, 0) + 1
    bad = {g for g, n in seen.items() if n > 1}
    if not bad:
        return {}
    groups: dict[int, list[int]] = {g: [] for g in bad}
    for i, g in enumerate(codes):
        if g in bad:
            groups[g].append(i)
    return groups


def _same_checksum_step(
    cols: StepColumns, groups: dict[int, list[int]]
) -> list[tuple[int, list[int]]]:
    """Each disagreeing group split by the step its checksums hash (``checksum_step``).

    A trainer kit reports a checksum a step late; ranks that hash different steps (a mix
    of reporters, a rank's first step after a restart) are not compared with each other.
    """
    out: list[tuple[int, list[int]]] = []
    recs = cols.records
    for g, idx in groups.items():
        by_step: dict[int, list[int]] = {}
        for i in idx:
            r = recs[i]
            by_step.setdefault(r.step if r.checksum_step is None else r.checksum_step,
                               []).append(i)
        out += [(g, sub) for sub in by_step.values()]
    return out


def param_divergence(cs: ClosedStep, cols: StepColumns) -> list[Fault]:
    """Replicas whose parameter checksum differs from their replica group's majority."""
    values = cols.param_checksum
    faults: list[Fault] = []
    for g, idx in _same_checksum_step(cols, disagreeing_groups(cols, values)):
        split = majority_split(values, idx)
        if split is None:
            continue
        c = split.culprits
        seen = sorted({values[i] or "" for i in c})
        observed = values[c[0]] if len(seen) == 1 else f"{len(seen)} different checksums"
        key = cols.group_keys[g]
        where = layout_text(key)
        if split.majority is not None:
            expected: str | None = str(split.majority)
            others = split.majority_count
            summary = (f"{cols.who(c)}: param checksum {short(observed)} differs from its "
                       f"{others} replica{'s' if others > 1 else ''}' {short(expected)}{where}")
        else:
            expected = None
            if split.voters == 2:
                summary = (f"{cols.who(c)}: param checksums {short(values[c[0]])} and "
                           f"{short(values[c[1]])} differ and 2 replicas{where} leave no "
                           "majority, so both are blamed")
            else:
                summary = (f"{cols.who(c)}: {split.distinct} different param checksums among "
                           f"{split.voters} replicas{where}, no majority; all are blamed")
        faults.append(Fault(
            check="param_divergence", category="integrity", entities=cols.rank_list(c),
            summary=summary, first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step,
            ranks=cols.rank_list(c), nodes=cols.node_list(c), observed=observed,
            expected=expected, score=len(c) / split.voters,
            evidence={"replicas": split.voters, "majority_count": split.majority_count,
                      "distinct": split.distinct, "tp_rank": key[0], "pp_rank": key[1],
                      "shard": key[2], "ep_rank": key[3]},
        ))
    return faults


def value_mismatch(
    check: CheckName, label: str, values: FloatArray, rtol: float, cs: ClosedStep, cols: StepColumns
) -> list[Fault]:
    """Ranks whose ``values`` (equal on every rank by construction) depart from the majority."""
    lo, hi = float(np.fmin.reduce(values)), float(np.fmax.reduce(values))  # NaN ignored
    if not hi - lo > rtol * max(abs(lo), abs(hi)):  # also true when all are NaN
        return []  # the usual case: one value everywhere
    idx = np.flatnonzero(np.isfinite(values))
    if len(idx) < 2:
        return []
    x = values[idx]
    xs = np.sort(x)  # one sort: the median, and the distinct values if it comes to that
    m = len(xs)
    ref = float(xs[m // 2] if m % 2 else (xs[m // 2 - 1] + xs[m // 2]) / 2.0)  # np.median
    ok = np.abs(x - ref) <= rtol * abs(ref)
    uniq: FloatArray | None = None
    if 2 * int(ok.sum()) <= len(x):  # the median fell between clusters: try the mode
        # np.unique(x, return_counts=True) of the sorted values, ties to the smallest.
        starts = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1])))
        uniq, counts = xs[starts], np.diff(np.append(starts, m))
        ref = float(uniq[int(np.argmax(counts))])
        ok = np.abs(x - ref) <= rtol * abs(ref)
    majority = 2 * int(ok.sum()) > len(x)
    if majority and ok.all():
        # The spread exceeds the tolerance but no value departs from the median by more
        # than it (two ranks 1.5 rtol apart: each is 0.75 rtol from their midpoint):
        # float noise around one value, nobody to blame.
        return []
    blamed = idx[~ok] if majority else idx
    rel = np.abs(values[blamed] - ref) / max(abs(ref), 1e-300)
    worst = int(blamed[int(np.argmax(rel))])
    c: list[int] = blamed.tolist()
    if majority:
        summary = (f"{cols.who(c)}: {label} {values[worst]:.8g} differs from the "
                   f"{int(ok.sum())} other ranks' {ref:.8g} (relative difference "
                   f"{float(rel.max()):.2g})")
        entities: tuple[Hashable, ...] = cols.rank_list(c)
        ranks, nodes = cols.rank_list(c), cols.node_list(c)
    elif len(c) == 2:
        summary = (f"{cols.who(c)}: {label} {values[c[0]]:.8g} and {values[c[1]]:.8g} differ "
                   "and 2 ranks leave no majority, so both are blamed")
        entities, ranks, nodes = cols.rank_list(c), cols.rank_list(c), cols.node_list(c)
    else:  # no majority among many ranks: the whole job is affected, nobody is singled out
        n_distinct = len(np.unique(x)) if uniq is None else len(uniq)
        summary = (f"{label} disagrees across the job's {len(x)} ranks at step {cs.step}: "
                   f"{n_distinct} different values from {lo:.8g} to {hi:.8g}, no majority")
        entities, ranks, nodes = ("*",), (), ()
    return [Fault(
        check=check, category="integrity", entities=entities, summary=summary,
        first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step, ranks=ranks, nodes=nodes,
        observed=float(values[worst]), expected=ref if majority else None,
        score=float(rel.max()),
        evidence={"majority": ref if majority else None, "agreeing": int(ok.sum()),
                  "ranks_reporting": len(x), "min": lo, "max": hi, "rtol": rtol},
    )]
