"""A batch of decoded records gathered into columns: one row, time, group and value set per point.

The baselines' hot loop. Per record it reads the readings with one ``attrgetter`` per
GPU or rank; everything that depends only on *who* sent the record (entity keys, their
rows, metadata, peer groups) is looked up once per node and then cached in the family:
a node whose GPUs (or a job's ranks on a node) arrive as they did last time maps to its
rows with one dict lookup. A record that differs (new entities, a lost GPU, another job)
takes the keyed path, which registers its entities exactly as one key at a time would.
Rows of new entities are assigned after the whole batch is gathered, after the family has
made room for them, so the batch's own entities are never evicted and new rows go out in
the order the entities first appear.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainguard.pipeline.detect.family import EntityFamily, EntityMeta
from trainguard.pipeline.detect.registry import FloatArray, IntArray
from trainguard.schemas.records import GpuSampleBatch, StepBatch, StepRecord

__all__ = ["GpuPoints", "Points", "RankPoints", "columns"]

_Values = tuple[float | None, ...]


class _Entry:
    """What one sender's records map to while they look the same (see module docstring)."""

    __slots__ = ("groups", "job", "rows", "sig", "whole")

    def __init__(self, sig: list[Any], job: Any, groups: list[int], whole: bool) -> None:
        self.sig, self.job, self.groups, self.whole = sig, job, groups, whole
        self.rows: list[int] = []


class Points:
    """One family's points of one batch, gathered as lists and returned as columns.

    One gatherer per batch: :meth:`columns` ends it.
    """

    def __init__(self, family: EntityFamily) -> None:
        self.family = family
        self._values: Callable[[Any], _Values] = operator.attrgetter(*family.banks)
        self._width = len(family.banks)
        self.rows: list[int] = []  # -1 until a new entity's row is assigned
        self.ts: list[float] = []
        self.groups: list[int] = []
        self.values: list[_Values] = []
        self._new: list[tuple[Any, _Entry, int, list[str]]] = []  # cache key, entry, at, keys

    def _hit(self, entry: _Entry, items: Sequence[Any]) -> None:
        self.rows += entry.rows
        self.groups += entry.groups
        self.values += map(self._values, items)

    def _keyed(self, cache_key: Any, entry: _Entry, keys: list[str]) -> None:
        """Points of a record whose rows are resolved (and cached) in :meth:`columns`."""
        self._new.append((cache_key, entry, len(self.rows), keys))
        self.rows += [-1] * len(keys)

    def columns(self) -> tuple[IntArray, FloatArray, FloatArray, IntArray]:
        """Rows, event times, values (a column per metric, NaN if unreported) and groups.

        Makes room for the batch's new entities, assigns their rows, records every
        point's time as its entity's last seen.
        """
        family, reg = self.family, self.family.registry
        rows = np.array(self.rows, dtype=np.int64)
        t = np.array(self.ts, dtype=np.float64)
        values = columns(self.values, self._width)
        groups = np.array(self.groups, dtype=np.int64)
        new = self._new
        if len(rows) and len(reg) + len(rows) > family.max_entities:  # rare: near the cap
            known = reg.keys_of(rows[rows >= 0])
            family.make_room([k for *_, keys in new for k in keys] + known)
        if new:
            at = np.concatenate([np.arange(a, a + len(keys)) for _, _, a, keys in new])
            rows[at] = reg.assign([k for *_, keys in new for k in keys])
            cache = family.cache
            if len(cache) + len(new) > family.max_entities:  # sender names are input too
                cache.clear()
            for cache_key, entry, a, keys in new:
                entry.rows = rows[a:a + len(keys)].tolist()
                cache[cache_key] = entry
        reg.touch(rows, t)
        return rows, t, values, groups


class GpuPoints(Points):
    """GPU points of sample batches: entity ``node/gpu``, one time per batch."""

    def add(self, record: GpuSampleBatch, sources: Sequence[str] | None, i: int) -> None:
        """Gather the points of one sample batch (lost GPUs have none)."""
        gpus = record.gpus
        # A lost GPU's index is negated (~): a GPU getting lost changes the signature.
        sig = [g.index if not g.lost else ~g.index for g in gpus]
        entry = self.family.cache.get(record.node)
        if entry is None or entry.sig != sig or entry.job != record.job_id:
            self._miss(record, sig, "" if sources is None else sources[i])
        elif entry.whole:
            self._hit(entry, gpus)
        else:
            self._hit(entry, [g for g in gpus if not g.lost])
        self.ts += [record.ts] * (len(self.rows) - len(self.ts))

    def _miss(self, record: GpuSampleBatch, sig: list[int], part: str) -> None:
        family, node, job = self.family, record.node, record.job_id
        meta, keys, gpus = family.meta, [], [g for g in record.gpus if not g.lost]
        for gpu in gpus:
            key = f"{node}/{gpu.index}"
            m = meta.get(key)
            if m is None:
                meta[key] = EntityMeta(record.cluster, node, gpu=gpu.index, job_id=job)
                family.source[key] = part
            elif m.job_id != job:
                m.job_id = job  # the GPU moved to another job (or left it)
            keys.append(key)
        group = family.group(job) if keys else -1
        entry = _Entry(sig, job, [group] * len(keys), whole=len(gpus) == len(sig))
        self._keyed(node, entry, keys)
        self.groups += entry.groups
        self.values += map(self._values, gpus)


class RankPoints(Points):
    """Rank points of step batches (or lone step records): entity ``job/rank``."""

    def add(self, record: StepBatch | StepRecord, sources: Sequence[str] | None,
            i: int) -> None:
        """Gather the points of one step batch or step record."""
        steps = record.steps if isinstance(record, StepBatch) else [record]
        sig = [s.rank for s in steps]
        jobs = [s.job_id for s in steps]
        cache_key = (record.job_id, record.node)
        entry = self.family.cache.get(cache_key)
        if entry is None or entry.sig != sig or entry.job != jobs:
            self._miss(record, steps, cache_key, _Entry(sig, jobs, [], whole=True),
                       "" if sources is None else sources[i])
        else:
            self._hit(entry, steps)
        self.ts += [s.ts for s in steps]

    def _miss(self, record: StepBatch | StepRecord, steps: list[StepRecord], cache_key: Any,
              entry: _Entry, part: str) -> None:
        family, meta, keys = self.family, self.family.meta, []
        cluster = record.cluster if isinstance(record, StepBatch) else ""
        for step in steps:
            key = f"{step.job_id}/{step.rank}"
            if key not in meta:
                meta[key] = EntityMeta(cluster, step.node, job_id=step.job_id, rank=step.rank)
                family.source[key] = part
            keys.append(key)
            entry.groups.append(family.group(step.job_id))
        self._keyed(cache_key, entry, keys)
        self.groups += entry.groups
        self.values += map(self._values, steps)


def columns(rows: list[_Values], width: int) -> FloatArray:
    """Rows of optional numbers → a float matrix, ``None`` (not reported) as NaN."""
    if not rows:
        return np.empty((0, width), dtype=np.float64)
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), width)
    except TypeError:  # some value is None: the slower, rarer path
        return np.array([[math.nan if v is None else v for v in row] for row in rows],
                        dtype=np.float64).reshape(len(rows), width)
