"""Fingerprints that must agree across ranks and stay put for the run: code and seeds.

``code_fingerprint`` (``env_fingerprint``: code, config, library versions) is compared
across all ranks; ``seed_mismatch`` (``seed_fingerprint``: data order and dropout seeds)
across replicas (equal ``(tp_rank, pp_rank, shard, ep_rank)``), which are the ranks
required to draw the same. A rank is blamed when its value differs from its group's
majority; a group is blamed when its majority changes from one step to the next within an
epoch (a restart may bring new code, nothing else may). For seeds, a new *data* epoch may
change them too (a sampler's ``set_epoch`` hashed into the fingerprint): a group-wide
change at a step whose ``data_epoch`` differs from the previous step's is a new reference,
not a finding; a minority rank still is one.
Where two replicas disagree, the one that changed from the group's previous value is the
culprit; without history both are blamed.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainguard.pipeline.consistency.agreement import Split, majority_split, short
from trainguard.pipeline.consistency.assembler import ClosedStep
from trainguard.pipeline.consistency.columns import NO_LAYOUT, LayoutKey, StepColumns, layout_text
from trainguard.pipeline.consistency.findings import Fault
from trainguard.schemas.records import CheckName, StepRecord

__all__ = ["FingerprintWatch"]

_ALL = NO_LAYOUT


def _data_epoch(records: Sequence[StepRecord], idx: Sequence[int] | None = None) -> int | None:
    """The data epoch most of ``records`` (those at ``idx``) report; None if none does."""
    counts: dict[int, int] = {}
    for i in (range(len(records)) if idx is None else idx):
        e = records[i].data_epoch
        if e is not None:
            counts[e] = counts.get(e, 0) + 1
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0] if counts else None


class FingerprintWatch:
    """One fingerprint check of one job: the value each group agreed on, and odd ranks."""

    def __init__(self, check: CheckName, label: str, *, grouped: bool,
                 data_epochs: bool = False) -> None:
        self.check = check
        self.label = label
        self.grouped = grouped
        #: A group-wide change at a new data epoch is a new reference (seeds), not a fault.
        self.data_epochs = data_epochs
        #: The value each replica group (by its layout key) agreed on last.
        self.ref: dict[LayoutKey, str] = {}
        #: The previous closed step's records (their data epoch is read only on a change).
        self._previous: Sequence[StepRecord] = ()
        #: Ranks whose last value differed from their group's: the slow path runs meanwhile.
        self.odd: dict[int, str] = {}
        self.epoch = 0

    def evaluate(
        self, cs: ClosedStep, cols: StepColumns, values: Sequence[str | None]
    ) -> list[Fault]:
        """Faults of one closed step."""
        if cs.epoch != self.epoch:  # a restart: new code and seeds are legitimate
            self.ref.clear()
            self.odd.clear()
            self.epoch = cs.epoch
        previous = self._previous
        if self.data_epochs:
            self._previous = cs.records
        grouped = self.grouped and cols.n_groups > 1
        keys = cols.group_keys if grouped else [_ALL]
        if not self.odd and self._unchanged(cols, values, keys, grouped):
            return []
        new_epoch = False
        if self.data_epochs and previous:
            now = _data_epoch(cs.records)
            new_epoch = now is not None and now != _data_epoch(previous)
        # Slow path (a fault or a change): every group, since one that agrees within
        # itself may still have changed.
        groups: dict[int, list[int]] = {g: [] for g in range(len(keys))}
        if grouped:
            for i, g in enumerate(cols.group.tolist()):
                groups[g].append(i)
        else:
            groups[0] = list(range(len(values)))
        faults: list[Fault] = []
        for g, idx in groups.items():
            faults += self._group(cs, cols, values, keys[g], idx, new_epoch)
        return faults

    def _unchanged(
        self, cols: StepColumns, values: Sequence[str | None],
        keys: list[LayoutKey], grouped: bool,
    ) -> bool:
        """Fast path: every group holds one value, the one it held before (or a first one)."""
        if grouped:
            voted = set(zip(cols.group.tolist(), values, strict=True))
        else:
            voted = {(0, v) for v in set(values)}
        pairs = {(g, v) for g, v in voted if v is not None}
        if len({g for g, _ in pairs}) != len(pairs):
            return False
        if any(self.ref.get(keys[g], v) != v for g, v in pairs):
            return False
        for g, v in pairs:
            self.ref[keys[g]] = v
        return True

    def _group(
        self, cs: ClosedStep, cols: StepColumns, values: Sequence[str | None],
        key: LayoutKey, idx: list[int], new_epoch: bool = False,
    ) -> list[Fault]:
        previous = self.ref.get(key)
        split = majority_split(values, idx)
        if split is not None and split.majority is None and previous is not None \
                and not new_epoch:  # (at a new data epoch keeping the old value is no merit)
            # A tie: the side that kept the group's previous value is the majority.
            kept = [i for i in idx if values[i] == previous]
            if kept:
                culprits = [i for i in idx if values[i] is not None and values[i] != previous]
                split = Split(previous, culprits, split.voters, len(kept), split.distinct)
        if split is None:
            voted = [values[i] for i in idx if values[i] is not None]
            majority = voted[0] if voted else None
        else:
            majority = None if split.majority is None else str(split.majority)
        faults: list[Fault] = []
        where = layout_text(key)
        if split is not None:
            faults.append(self._minority(cs, cols, values, split, majority, previous, where))
        if majority is not None and previous is not None and majority != previous \
                and not new_epoch:
            changed = [i for i in idx if values[i] == majority]
            faults.append(Fault(
                check=self.check, category="integrity", entities=(("changed", key),),
                summary=(f"{self.label} of {cols.who(changed)}{where} changed mid-run from "
                         f"{short(previous)} to {short(majority)} at step {cs.step} without "
                         "a restart"),
                first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step,
                ranks=cols.rank_list(changed), nodes=cols.node_list(changed),
                observed=majority, expected=previous, score=1.0,
                evidence={"previous": previous, "now": majority, "ranks_changed": len(changed)},
            ))
        if majority is not None:
            self.ref[key] = majority
        blamed = set(split.culprits) if split is not None else set()
        for i in idx:
            v = values[i]
            if v is None:
                continue
            r = int(cols.ranks[i])
            if i in blamed:
                self.odd[r] = v
            else:
                self.odd.pop(r, None)
        return faults

    def _minority(
        self, cs: ClosedStep, cols: StepColumns, values: Sequence[str | None], split: Split,
        majority: str | None, previous: str | None, where: str,
    ) -> Fault:
        c = split.culprits
        seen = sorted({values[i] or "" for i in c})
        observed = values[c[0]] if len(seen) == 1 else f"{len(seen)} different values"
        before = self.odd.get(int(cols.ranks[c[0]]), previous)
        if majority is not None:
            summary = (f"{cols.who(c)}: {self.label} {short(observed)} differs from the "
                       f"{split.majority_count} other ranks'{where} {short(majority)}")
        elif split.voters == 2:
            summary = (f"{cols.who(c)}: {self.label}s {short(values[c[0]])} and "
                       f"{short(values[c[1]])} differ{where} and 2 ranks leave no majority, "
                       "so both are blamed")
        else:
            summary = (f"{cols.who(c)}: {split.distinct} different {self.label}s among "
                       f"{split.voters} ranks{where}, no majority; all are blamed")
        return Fault(
            check=self.check, category="integrity", entities=cols.rank_list(c),
            summary=summary, first_seen=cs.first_ts, ts=cs.decided_ts, step=cs.step,
            ranks=cols.rank_list(c), nodes=cols.node_list(c), observed=observed,
            expected=majority, score=len(c) / split.voters,
            evidence={"voters": split.voters, "majority_count": split.majority_count,
                      "distinct": split.distinct, "previous": before},
        )
