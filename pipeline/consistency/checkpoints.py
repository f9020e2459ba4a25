"""``checkpoint_digest``: a checkpoint shard loaded with another digest than it was saved with.

Every rank reports the digest of its shard when it saves and when it loads. Each rank's
last ``max_checkpoints`` saves are remembered; a load is compared with the save of the
same ``(checkpoint_id, rank)``. A load whose save was never seen (saved before the worker
started, evicted or refused) is only counted. The mismatching loads of one checkpoint
within one batch of records are one fault.

Forged saves must not push real ones out: a rank's new save beyond ``max_checkpoints``
evicts its oldest only once that is ``keep_s`` old (event time); otherwise the new save is
refused and counted (``refused_saves``). A second save of the same ``(checkpoint_id,
rank)`` with another digest or step does not replace the first: it is a
``conflicting_report`` (see :mod:`~trainguard.pipeline.consistency.conflicts`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial

from trainguard.pipeline.consistency.agreement import short
from trainguard.pipeline.consistency.conflicts import Conflict, conflict_fault
from trainguard.pipeline.consistency.findings import Fault
from trainguard.schemas.records import CheckpointEvent

__all__ = ["CheckpointWatch", "Save"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Save:
    """One rank's shard of one checkpoint as saved."""

    digest: str
    step: int
    ts: float
    node: str


def _shard(checkpoint_id: str, conflict: Conflict) -> tuple[str, int]:
    """The entity a save conflict blames: the shard ``(checkpoint_id, rank)``."""
    return checkpoint_id, conflict.rank


class CheckpointWatch:
    """The saved digests of one job's recent checkpoints, and the check of every load."""

    def __init__(self, max_checkpoints: int, keep_s: float = 1800.0,
                 max_world_size: int = 1 << 20) -> None:
        self.max_checkpoints = max_checkpoints
        self.max_world_size = max_world_size
        self.keep_s = keep_s
        #: rank → checkpoint id → its save, oldest first.
        self.saves: dict[int, dict[str, Save]] = {}
        self.loads_checked = 0
        self.unknown_loads = 0
        #: New saves refused: the rank's memory was full of saves younger than ``keep_s``.
        self.refused_saves = 0
        #: Saves that differed from the save of the same checkpoint and rank (kept out).
        self.conflicting_saves = 0

    def saved(self, checkpoint_id: str, rank: int) -> Save | None:
        """The remembered save of ``rank``'s shard of ``checkpoint_id``."""
        return self.saves.get(rank, {}).get(checkpoint_id)

    def observe(
        self, events: list[CheckpointEvent], now: float = -math.inf
    ) -> tuple[list[Fault], list[Fault]]:
        """Remember saves and check loads at event time ``now`` (at least the events' own).

        Returns the ``checkpoint_digest`` faults (one per checkpoint with modified shards)
        and the ``conflicting_report`` faults (one per checkpoint saved twice differently).
        """
        # Saves first when a save and a load share an event time within one batch.
        ordered = sorted(events, key=lambda e: (e.ts, e.action != "save"))
        now = max([now, *(ev.ts for ev in ordered)])
        bad: dict[str, list[tuple[CheckpointEvent, Save]]] = {}
        clashes: dict[str, list[Conflict]] = {}
        for ev in ordered:
            key = ev.checkpoint_id
            if ev.action == "save":
                clash = self._remember(ev, now)
                if clash is not None:
                    clashes.setdefault(key, []).append(clash)
                continue
            saved = self.saved(key, ev.rank)
            if saved is None:
                self.unknown_loads += 1
                continue
            self.loads_checked += 1
            if ev.digest.lower() != saved.digest:
                bad.setdefault(key, []).append((ev, saved))
        conflicts = [conflict_fault(f"checkpoint {key}", rows, partial(_shard, key),
                                    ts=max(c.second_ts for c in rows),
                                    evidence={"checkpoint_id": key})
                     for key, rows in clashes.items()]
        return [self._fault(key, rows) for key, rows in bad.items()], conflicts

    def _remember(self, ev: CheckpointEvent, now: float) -> Conflict | None:
        """Remember a save unless its rank's memory is full; a different second save clashes."""
        if ev.rank >= self.max_world_size:
            self._refuse(ev, "rank out of range")
            return None
        shards = self.saves.setdefault(ev.rank, {})
        digest = ev.digest.lower()
        first = shards.get(ev.checkpoint_id)
        if first is not None:
            if (first.digest, first.step) == (digest, ev.step):
                return None  # the same save again: a replay, or a retried write
            self.conflicting_saves += 1
            field = "digest" if first.digest != digest else "step"
            return Conflict(
                rank=ev.rank, step=first.step, first_source=first.node, second_source=ev.node,
                first_ts=first.ts, second_ts=ev.ts,
                fields=tuple(f for f, differs in (("step", first.step != ev.step),
                                                  ("digest", first.digest != digest)) if differs),
                first_value=short(first.digest) if field == "digest" else str(first.step),
                second_value=short(digest) if field == "digest" else str(ev.step))
        if len(shards) >= self.max_checkpoints:
            oldest = min(shards, key=lambda k: shards[k].ts)
            if now - shards[oldest].ts < self.keep_s:
                self._refuse(ev, "rank's saves all younger than checkpoint_keep_s")
                return None
            del shards[oldest]
        shards[ev.checkpoint_id] = Save(digest, ev.step, ev.ts, ev.node)
        return None

    def _refuse(self, ev: CheckpointEvent, why: str) -> None:
        self.refused_saves += 1
        n = self.refused_saves
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a flood costs a few lines
            log.warning("checkpoint save refused (%s) job=%r rank=%d checkpoint_id=%r node=%r "
                        "max_checkpoints=%d refused_saves=%d", why, ev.job_id, ev.rank,
                        ev.checkpoint_id, ev.node, self.max_checkpoints, n)

    def _fault(self, checkpoint_id: str, rows: list[tuple[CheckpointEvent, Save]]) -> Fault:
        rows.sort(key=lambda row: row[0].rank)
        ranks = tuple(ev.rank for ev, _ in rows)
        nodes = tuple(sorted({ev.node for ev, _ in rows}))
        first, save = rows[0]
        saved, step = save.digest, save.step
        saved_shards = sum(1 for shards in self.saves.values() if checkpoint_id in shards)
        if len(rows) == 1:
            summary = (f"rank {first.rank} on {first.node}: loaded its shard of "
                       f"{checkpoint_id} with digest {short(first.digest)} but saved it (step "
                       f"{step}) with {short(saved)}: the shard changed in between")
        else:
            summary = (f"{len(rows)} ranks ({', '.join(str(r) for r in ranks[:8])}"
                       f"{', …' if len(rows) > 8 else ''}) on {', '.join(nodes[:4])}: loaded "
                       f"shards of {checkpoint_id} whose digests differ from those saved at "
                       f"step {step}: the shards changed in between")
        return Fault(
            check="checkpoint_digest", category="integrity",
            entities=tuple((checkpoint_id, r) for r in ranks), summary=summary,
            first_seen=min(ev.ts for ev, _ in rows), ts=max(ev.ts for ev, _ in rows),
            step=step, ranks=ranks, nodes=nodes,
            observed=first.digest if len(rows) == 1 else f"{len(rows)} modified shards",
            expected=saved if len(rows) == 1 else None, score=len(rows) / max(saved_shards, 1),
            evidence={"checkpoint_id": checkpoint_id, "modified_shards": len(rows),
                      "saved_shards": saved_shards, "load_ts": first.ts},
        )
