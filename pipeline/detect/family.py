"""One kind of entity (GPUs, or ranks): its registry, one detector bank per metric, metadata.

An :class:`EntityFamily` holds what the baselines stage keeps per entity kind: the
:class:`~trainguard.pipeline.detect.registry.EntityRegistry` of its keys, one
:class:`~trainguard.pipeline.detect.DetectorBank` per metric, each entity's
:class:`EntityMeta` (for the wire anomaly) and input partition, and the peer group of each
job. It caps the entities it holds (evicting the least recently seen, never those of the
batch at hand), expires silent ones, and exports, loads and drops a partition's entities.

Whoever gathers points may cache entity rows between batches (a node's GPUs map to the
same rows batch after batch): :attr:`EntityFamily.cache` is emptied whenever a row could
change hands or a group id could go (eviction, expiry, drop, load), so a cached row is
always still the entity's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import msgspec
import numpy as np

from trainguard.pipeline.detect.bank import DetectorBank
from trainguard.pipeline.detect.registry import EntityRegistry, FloatArray, IntArray
from trainguard.pipeline.detect.types import BankConfig, Detection

__all__ = ["EntityFamily", "EntityMeta", "finish_export"]

log = logging.getLogger(__name__)


# Frozen: a snapshot round takes the list of an entity's metadata on the loop and writes
# it out on a thread, while batches go on (a GPU that moves job gets a new one).
class EntityMeta(msgspec.Struct, frozen=True):
    """What an anomaly says about its entity besides the key."""

    cluster: str
    node: str | None
    gpu: int | None = None
    job_id: str | None = None
    rank: int | None = None


class EntityFamily:
    """One entity kind: a registry, one bank per metric, metadata and peer groups."""

    def __init__(self, kind: str, metrics: dict[str, str], bank: BankConfig,
                 max_entities: int) -> None:
        self.kind = kind
        self.max_entities = max_entities
        #: Entities evicted at the cap since start.
        self.evicted = 0
        self.registry = EntityRegistry()
        self.banks = {
            m: DetectorBank(m, replace(bank, direction=d))  # type: ignore[arg-type]
            for m, d in metrics.items()
        }
        self.meta: dict[str, EntityMeta] = {}
        #: Which input partition each entity's data comes from: state moves with it.
        self.source: dict[str, str] = {}
        #: Peer group (an int the banks compare) of each job with live entities.
        self.groups: dict[str, int] = {}
        self._next_group = 0
        #: Rows (and group ids) cached by a point gatherer; emptied when they may go stale.
        self.cache: dict[Any, Any] = {}

    def update(self, rows: IntArray, t: FloatArray, values: Sequence[FloatArray],
               groups: IntArray) -> list[tuple[str, Detection]]:
        """Feed one point per entry of ``rows`` (``values[j]`` is metric ``j``'s column).

        ``groups`` puts each point's row in its peer group (its job's id from
        :meth:`group`). Rows come from :attr:`registry`, already made room for.
        """
        found: list[tuple[str, Detection]] = []
        if not len(rows):
            return found
        for bank, column in zip(self.banks.values(), values, strict=True):
            bank.grow(self.registry.n_rows)
            # The bank orders several ticks of one entity by event time itself.
            for finding in bank.update(rows, column, t, groups):
                found.append((self.registry.keys_of([finding.row])[0], finding))
        return found

    def group(self, job: str | None) -> int:
        """The peer group id of ``job`` (-1 for none), new ids in order of first use."""
        if job is None:
            return -1
        g = self.groups.get(job)
        if g is None:
            # Never reused, so a row still holding a gone job's id cannot meet new peers.
            g = self.groups[job] = self._next_group
            self._next_group += 1
        return g

    def suppressed(self) -> dict[str, int]:
        """Departures the banks did not report, by reason (see ``DetectorBank.suppressed``)."""
        out: dict[str, int] = {}
        for bank in self.banks.values():
            for reason, n in bank.suppressed.items():
                out[reason] = out.get(reason, 0) + n
        return out

    def quiet_points(self) -> tuple[int, int]:
        """Points taken by the banks' compiled quiet paths, and points passed on, summed."""
        taken = passed = 0
        for bank in self.banks.values():
            t, p = bank.quiet_points()
            taken, passed = taken + t, passed + p
        return taken, passed

    def make_room(self, keys: Sequence[str]) -> None:
        """Evict the least recently seen entities so the new ones among ``keys`` fit.

        A batch's own entities are never evicted: one with more new keys than the cap
        leaves the registry over it until the next batch.
        """
        reg = self.registry
        if len(reg) + len(keys) <= self.max_entities:
            return  # the common case: far from the cap, no need to look closer
        batch = set(keys)
        new = sum(1 for k in batch if reg.get(k) is None)
        over = len(reg) + new - self.max_entities
        if over <= 0:
            return
        rows = reg.least_recent(over, spare=list(batch))
        gone = reg.keys_of(rows)
        self._forget(gone)
        reg.release(rows)
        for bank in self.banks.values():
            bank.grow(reg.n_rows)
            bank.reset_rows(rows)
        before, self.evicted = self.evicted, self.evicted + len(gone)
        if before == 0 or before // 1000 != self.evicted // 1000:  # a flood stays quiet
            log.warning("baseline entities evicted kind=%s evicted=%d max_entities=%d total=%d "
                        "oldest=%s", self.kind, len(gone), self.max_entities, self.evicted,
                        gone[0] if gone else "")

    def expire(self, now: float, idle_s: float) -> int:
        """Forget entities silent for ``idle_s`` (event time); return how many."""
        live = self.live_rows()
        stale = self.registry.last_seen(live) < now - idle_s
        if not stale.any():
            return 0
        self._forget(self.registry.keys_of(live[stale]))
        live_jobs = {m.job_id for m in self.meta.values()}
        for job in [j for j in self.groups if j not in live_jobs]:
            del self.groups[job]
        freed = self.registry.expire(now, idle_s)
        rows = np.asarray(freed, dtype=np.int64)
        for bank in self.banks.values():
            bank.reset_rows(rows)
        return len(freed)

    def export(self, part: str) -> dict[str, Any]:
        """The state of the entities fed by partition ``part``."""
        return finish_export(self.copy_part(part))

    def copy_part(self, part: str) -> dict[str, Any]:
        """Copies of what :meth:`export` writes of ``part``; :func:`finish_export` ends it.

        Only this part reads the family: the rest may run on another thread while
        batches move the state on.
        """
        keys = [k for k, p in self.source.items() if p == part and k in self.meta]
        rows = np.asarray([self.registry.get(k) for k in keys], dtype=np.int64)
        meta = self.meta
        doc: dict[str, Any] = {
            "keys": keys,
            "last_seen": self.registry.last_seen(rows),
            "meta": [meta[k] for k in keys],
            "banks": {},
        }
        for metric, bank in self.banks.items():
            bank.grow(self.registry.n_rows)
            doc["banks"][metric] = bank.state_rows(rows)
        return doc

    def load(self, part: str, doc: dict[str, Any]) -> int:
        """Install exported entities (rows may differ from where they were exported)."""
        keys = [str(k) for k in np.asarray(doc["keys"]).tolist()]
        if not keys:
            return 0
        self.make_room(keys)
        self.cache.clear()  # loaded metadata may name another job than a cached entry
        rows = self.registry.rows_for(keys, np.asarray(doc["last_seen"], dtype=np.float64))
        for key, meta in zip(keys, doc["meta"], strict=True):
            self.meta[key] = msgspec.convert(meta, EntityMeta)
            self.source[key] = part
        for metric, bank in self.banks.items():
            bank.grow(self.registry.n_rows)
            if metric in doc["banks"]:
                bank.load_state_rows(rows, doc["banks"][metric])
        return len(keys)

    def drop(self, part: str) -> int:
        """Forget the entities of a partition this worker no longer owns."""
        keys = [k for k, p in self.source.items() if p == part]
        rows = np.asarray([r for k in keys if (r := self.registry.get(k)) is not None],
                          dtype=np.int64)
        self.registry.release(rows)
        for bank in self.banks.values():
            bank.grow(self.registry.n_rows)
            bank.reset_rows(rows)
        self._forget(keys)
        return len(keys)

    def live_rows(self) -> IntArray:
        """Rows that currently belong to an entity."""
        rows = [self.registry.get(k) for k in self.meta]
        return np.asarray([r for r in rows if r is not None], dtype=np.int64)

    def _forget(self, keys: Sequence[str]) -> None:
        """Drop the metadata of entities whose rows are being released."""
        self.cache.clear()
        for key in keys:
            self.meta.pop(key, None)
            self.source.pop(key, None)


def finish_export(doc: dict[str, Any]) -> dict[str, Any]:
    """:meth:`EntityFamily.copy_part`'s copies as :meth:`EntityFamily.export` writes them."""
    return {**doc, "keys": np.array(doc["keys"], dtype=np.str_),
            "meta": msgspec.to_builtins(doc["meta"])}
