"""``checkpoint_digest``: a checkpoint shard loaded with another digest than it was saved with.

Every rank reports the digest of its shard when it saves and when it loads. The saves of
the job's last ``max_checkpoints`` checkpoints are remembered (per checkpoint, per rank);
a load is compared with the save of the same ``(checkpoint_id, rank)``. A load whose save
was never seen (saved before the worker started, or evicted) is only counted. The
mismatching loads of one checkpoint within one batch of records are one fault.
"""

from __future__ import annotations

from collections import OrderedDict

from trainguard.pipeline.consistency.agreement import short
from trainguard.pipeline.consistency.findings import Fault
from trainguard.schemas.records import CheckpointEvent

__all__ = ["CheckpointWatch"]


class CheckpointWatch:
    """The saved digests of one job's recent checkpoints, and the check of every load."""

    def __init__(self, max_checkpoints: int) -> None:
        self.max_checkpoints = max_checkpoints
        #: checkpoint id → rank → (digest, step) as saved; oldest checkpoint first.
        self.saves: OrderedDict[str, dict[int, tuple[str, int]]] = OrderedDict()
        self.loads_checked = 0
        self.unknown_loads = 0

    def observe(self, events: list[CheckpointEvent]) -> list[Fault]:
        """Remember saves and check loads; one fault per checkpoint with modified shards."""
        # Saves first when a save and a load share an event time within one batch.
        ordered = sorted(events, key=lambda e: (e.ts, e.action != "save"))
        bad: dict[str, list[tuple[CheckpointEvent, str, int]]] = {}
        for ev in ordered:
            key = ev.checkpoint_id
            if ev.action == "save":
                shards = self.saves.get(key)
                if shards is None:
                    shards = self.saves[key] = {}
                    while len(self.saves) > self.max_checkpoints:
                        self.saves.popitem(last=False)
                shards[ev.rank] = (ev.digest.lower(), ev.step)
                continue
            saved = self.saves.get(key, {}).get(ev.rank)
            if saved is None:
                self.unknown_loads += 1
                continue
            self.loads_checked += 1
            if ev.digest.lower() != saved[0]:
                bad.setdefault(key, []).append((ev, saved[0], saved[1]))
        return [self._fault(key, rows) for key, rows in bad.items()]

    def _fault(self, checkpoint_id: str, rows: list[tuple[CheckpointEvent, str, int]]) -> Fault:
        rows.sort(key=lambda row: row[0].rank)
        ranks = tuple(ev.rank for ev, _, _ in rows)
        nodes = tuple(sorted({ev.node for ev, _, _ in rows}))
        first, saved, step = rows[0]
        saved_shards = len(self.saves.get(checkpoint_id, {}))
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
            first_seen=min(ev.ts for ev, _, _ in rows), ts=max(ev.ts for ev, _, _ in rows),
            step=step, ranks=ranks, nodes=nodes,
            observed=first.digest if len(rows) == 1 else f"{len(rows)} modified shards",
            expected=saved if len(rows) == 1 else None, score=len(rows) / max(saved_shards, 1),
            evidence={"checkpoint_id": checkpoint_id, "modified_shards": len(rows),
                      "saved_shards": saved_shards, "load_ts": first.ts},
        )
