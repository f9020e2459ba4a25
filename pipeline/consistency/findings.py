"""From failed checks to wire findings: stable identities, one finding per fault, clearing.

A check hands :class:`Fault` s to a job's :class:`FindingTracker` each time it evaluates
(a closed step, a GPU sample, a checkpoint load). The tracker keeps, per check, the
*entities* currently blamed (a rank, a node, a GPU, a checkpoint shard) and emits a
:class:`~trainguard.schemas.records.Finding` only when a fault names an entity not yet blamed. An
entity is forgotten after ``clear_steps`` evaluations that covered it without failing it;
only then can it be reported anew. A fault that persists is re-emitted with the same
``finding_id`` at most every ``repeat_s`` of event time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from msgspec.structs import replace

from trainguard.pipeline.consistency.config import CHECK_VERSION
from trainguard.schemas.records import CheckName, Finding

__all__ = ["Category", "Entity", "Fault", "FindingTracker", "finding_id"]

Category = Literal["integrity", "availability", "hardware", "info"]
#: What a check blames and dedups on: a rank (``int``), a node (``str``), a GPU
#: (``(node, index)``), a checkpoint shard (``(checkpoint_id, rank)``) or the job (``"*"``).
Entity = Hashable
Evidence = Mapping[str, float | str | None]


@dataclass(frozen=True, slots=True)
class Fault:
    """One failed check at one evaluation, naming whom it blames."""

    check: CheckName
    category: Category
    #: The entities this fault blames; the dedup keys.
    entities: tuple[Entity, ...]
    summary: str
    #: Event time of the evaluation's first and last record (step, sample, event).
    first_seen: float
    ts: float
    step: int | None = None
    ranks: tuple[int, ...] = ()
    nodes: tuple[str, ...] = ()
    gpu_index: int | None = None
    observed: float | str | None = None
    expected: float | str | None = None
    score: float = 0.0
    evidence: Evidence = field(default_factory=dict)


def finding_id(
    cluster: str, job_id: str, check: str, entities: tuple[Entity, ...], anchor: str
) -> str:
    """A short, stable identity: the same job, check, culprits and first step give the same id.

    ``anchor`` is the first step (``"step=123"``) or, for checks without steps, the first
    sample's event time: both come from the records, so a replay gives the same id.
    """
    culprits = ",".join(sorted(repr(e) for e in entities))
    text = f"{cluster}|{job_id}|{check}|{culprits}|{anchor}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


@dataclass(slots=True)
class _Open:
    """A finding that was emitted and whose entities are still blamed."""

    finding: Finding
    last_emit: float
    refs: int
    entities: frozenset[Entity]


@dataclass(slots=True)
class _Blamed:
    finding_id: str
    clear: int = 0


class FindingTracker:
    """One job's open findings: emits new faults once, clears them, re-emits persisting ones."""

    def __init__(
        self, cluster: str, job_id: str, *, clear_steps: int, repeat_s: float, max_open: int
    ) -> None:
        self.cluster = cluster
        self.job_id = job_id
        self.clear_steps = clear_steps
        self.repeat_s = repeat_s
        self.max_open = max_open
        self._blamed: dict[CheckName, dict[Entity, _Blamed]] = {}
        self._open: dict[str, _Open] = {}

    def is_blamed(self, check: CheckName, entity: Entity) -> bool:
        """True while ``check`` blames ``entity`` (an open finding names it)."""
        return entity in self._blamed.get(check, ())

    def open_findings(self) -> list[Finding]:
        """The findings currently open (in emission order)."""
        return [o.finding for o in self._open.values()]

    def update(
        self, check: CheckName, faults: list[Fault], scope: Container[Entity] | None,
        now: float | None = None,
    ) -> list[Finding]:
        """Take one evaluation of ``check``; return the findings to emit.

        ``scope`` holds the entities this evaluation covered: a blamed entity in scope and
        in none of ``faults`` counts one step towards clearing. ``None``: nothing clears.
        ``now`` is the evaluation's event time: when a finding's last culprit clears, a
        notice with ``cleared_at`` set is emitted too (with ``None``, none is), so alerts
        resolve when the fault clears rather than after a quiet period.
        """
        blamed = self._blamed.setdefault(check, {})
        out: list[Finding] = []
        failing: set[Entity] = set()
        for fault in faults:
            failing.update(fault.entities)
            if all(e in blamed for e in fault.entities):
                for e in fault.entities:
                    blamed[e].clear = 0
                again = self._repeat(blamed[fault.entities[0]].finding_id, fault)
                if again is not None:
                    out.append(again)
                continue
            out.append(self._open_finding(blamed, fault))
        if scope is not None and blamed:
            for entity in [e for e in blamed if e not in failing and e in scope]:
                state = blamed[entity]
                state.clear += 1
                if state.clear >= self.clear_steps:
                    closed = self._release(blamed, entity)
                    if closed is not None and now is not None:
                        out.append(replace(closed.finding, cleared_at=max(now, closed.last_emit)))
        return out

    def _open_finding(self, blamed: dict[Entity, _Blamed], fault: Fault) -> Finding:
        anchor = f"step={fault.step}" if fault.step is not None else f"t={fault.first_seen:.3f}"
        fid = finding_id(self.cluster, self.job_id, fault.check, fault.entities, anchor)
        finding = Finding(
            finding_id=fid, cluster=self.cluster, job_id=self.job_id, check=fault.check,
            category=fault.category, first_seen=fault.first_seen, ts=fault.ts,
            last_seen=fault.ts, step=fault.step,
            ranks=sorted(set(fault.ranks)), nodes=sorted(set(fault.nodes)),
            gpu_index=fault.gpu_index, observed=fault.observed, expected=fault.expected,
            score=float(fault.score), summary=fault.summary, evidence=dict(fault.evidence),
            check_version=CHECK_VERSION,
        )
        # A fault naming a new culprit beside old ones is a new state of the incident: the
        # new finding takes the old culprits over, and the old one closes when unreferenced.
        for entity in fault.entities:
            if entity in blamed:
                self._release(blamed, entity)
            blamed[entity] = _Blamed(fid)
        self._open[fid] = _Open(finding, fault.ts, len(fault.entities), frozenset(fault.entities))
        while len(self._open) > self.max_open:
            self._evict_oldest()
        return finding

    def _repeat(self, fid: str, fault: Fault) -> Finding | None:
        current = self._open.get(fid)
        if current is None or self.repeat_s <= 0 or fault.ts - current.last_emit < self.repeat_s:
            return None
        current.last_emit = fault.ts
        # The culprits stay those of the first emission (they make the id); the sentence
        # is updated only when it is still about exactly them.
        same = frozenset(fault.entities) == current.entities
        current.finding = replace(
            current.finding, last_seen=fault.ts, observed=fault.observed, expected=fault.expected,
            score=float(fault.score), evidence=dict(fault.evidence),
            summary=fault.summary if same else current.finding.summary)
        return current.finding

    def _release(self, blamed: dict[Entity, _Blamed], entity: Entity) -> _Open | None:
        """Stop blaming ``entity``; return its finding if that closed it (no culprit left)."""
        state = blamed.pop(entity)
        current = self._open.get(state.finding_id)
        if current is not None:
            current.refs -= 1
            if current.refs <= 0:
                del self._open[state.finding_id]
                return current
        return None

    def _evict_oldest(self) -> None:
        fid = next(iter(self._open))
        del self._open[fid]
        for blamed in self._blamed.values():
            for entity in [e for e, s in blamed.items() if s.finding_id == fid]:
                del blamed[entity]
