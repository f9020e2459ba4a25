"""``conflicting_report``: two different reports of one thing are evidence, not an overwrite.

A rank reports each step once, and saves its shard of a checkpoint once. At-least-once
delivery repeats a report byte for byte; that is silent. A *different* second report of
the same ``(job, epoch, step, rank)``, or a second save of the same ``(checkpoint_id,
rank)`` with another digest or step, means someone else speaks for the rank (a forged
copy, a second process claiming its rank, a replayed spool of another run). The first
report stays where it was (in the step, in the checkpoint memory), so a later copy cannot
erase evidence; the clash is an integrity finding naming both senders and the fields
that differ (and both processes, where the agent stamped the kernel's pid and uid on the
records). A re-run of a step after a restart is another epoch and is not a conflict.

A second live *process* claiming a rank on one node never gets that far: its agent
refuses it and reports a :class:`~trainguard.schemas.records.RankClaim` with the job's
steps, which :func:`claim_fault` turns into the same finding, naming both pids and uids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from trainguard.pipeline.consistency.findings import Entity, Fault
from trainguard.schemas.records import RankClaim

__all__ = ["Conflict", "claim_fault", "conflict_fault", "differing_fields", "shown",
           "step_conflicts"]

#: Ranks and nodes named in one summary sentence (the finding lists them all).
_NAMED = 8


@dataclass(frozen=True, slots=True)
class Conflict:
    """The first report of something (kept) and a later, different one (refused)."""

    rank: int
    step: int
    #: The nodes that sent each version.
    first_source: str
    second_source: str
    first_ts: float
    second_ts: float
    #: Fields whose values differ, in the record's field order.
    fields: tuple[str, ...]
    #: The first differing field's value in each version, shortened for a sentence.
    first_value: str
    second_value: str
    #: The sending processes as their agents' kernels saw them (``None``: not stamped).
    first_pid: int | None = None
    first_uid: int | None = None
    second_pid: int | None = None
    second_uid: int | None = None


def differing_fields(a: msgspec.Struct, b: msgspec.Struct) -> tuple[str, ...]:
    """The names of the fields whose values differ between two records of one type."""
    return tuple(name for name in a.__struct_fields__ if getattr(a, name) != getattr(b, name))


def shown(value: object) -> str:
    """A field's value as a sentence shows it (hashes shortened as ``agreement.short`` does)."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value if len(value) <= 10 else value[:8] + "…"
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


def step_conflicts(step: int, conflicts: Sequence[Conflict], ts: float) -> list[Fault]:
    """The fault of one closed step's conflicts (none without): each blames its rank."""
    if not conflicts:
        return []
    return [conflict_fault(f"step {step}", conflicts, lambda c: c.rank, ts=ts)]


def conflict_fault(
    subject: str, conflicts: Sequence[Conflict], entity: Callable[[Conflict], Entity], *,
    ts: float, evidence: dict[str, float | str | None] | None = None,
) -> Fault:
    """One ``conflicting_report`` fault for the conflicts of one step or checkpoint.

    ``subject`` names what was reported twice (``"step 120"``, ``"checkpoint c/100"``);
    ``entity`` gives a conflict's blamed key; ``ts`` is the evaluation's event time.
    """
    rows = sorted(conflicts, key=lambda c: c.rank)
    first = rows[0]
    ranks = tuple(c.rank for c in rows)
    nodes = tuple(sorted({c.first_source for c in rows} | {c.second_source for c in rows}))
    fields = tuple(dict.fromkeys(f for c in rows for f in c.fields))
    if len(rows) == 1:
        field = first.fields[0] if first.fields else "?"
        summary = (f"rank {first.rank}: two different reports of {subject}: "
                   f"{_who(first.first_source, first.first_pid, first.first_uid)} sent "
                   f"{field}={first.first_value} first (kept), then "
                   f"{_who(first.second_source, first.second_pid, first.second_uid)} sent "
                   f"{field}={first.second_value}; fields differ: {', '.join(first.fields)}")
    else:
        named = ", ".join(str(r) for r in ranks[:_NAMED]) + (", …" if len(rows) > _NAMED else "")
        summary = (f"{len(rows)} ranks ({named}): two different reports of {subject} each, "
                   f"sent by {', '.join(nodes[:4])}{', …' if len(nodes) > 4 else ''}; "
                   f"fields differ: {', '.join(fields)}")
    ev: dict[str, float | str | None] = {
        "conflicts": len(rows), "fields": ",".join(fields),
        "first_sources": ",".join(sorted({c.first_source for c in rows})),
        "second_sources": ",".join(sorted({c.second_source for c in rows})),
        "first_ts": min(c.first_ts for c in rows), "second_ts": max(c.second_ts for c in rows),
    }
    if any(c.first_pid is not None or c.second_pid is not None for c in rows):
        ev.update(_processes(rows))
    ev.update(evidence or {})
    return Fault(
        check="conflicting_report", category="integrity",
        entities=tuple(entity(c) for c in rows), summary=summary,
        first_seen=min(ts, *(min(c.first_ts, c.second_ts) for c in rows)), ts=ts,
        step=first.step, ranks=ranks, nodes=nodes,
        observed=first.second_value if len(rows) == 1 else f"{len(rows)} conflicts",
        expected=first.first_value if len(rows) == 1 else None, score=float(len(rows)),
        evidence=ev,
    )


def _who(source: str, pid: int | None, uid: int | None) -> str:
    return source if pid is None else f"{source} (pid {pid}, uid {uid})"


def _processes(rows: Sequence[Conflict]) -> dict[str, float | str | None]:
    """Evidence naming the processes behind each version (as ``pid:uid`` lists)."""
    def ids(pairs: Sequence[tuple[int | None, int | None]]) -> str:
        return ",".join(dict.fromkeys(f"{p}:{u}" for p, u in pairs if p is not None))

    return {"first_processes": ids([(c.first_pid, c.first_uid) for c in rows]),
            "second_processes": ids([(c.second_pid, c.second_uid) for c in rows])}


def claim_fault(claim: RankClaim, node: str) -> Fault:
    """The ``conflicting_report`` fault of a rank claimed by a second live process on ``node``.

    Blames the claimant (node, rank, pid): each claimant is its own finding, apart from
    the per-step conflicts of the rank. Anchored on the claim's time (no step decides it).
    """
    holder, claimant = f"pid {claim.holder_pid} (uid {claim.holder_uid})", \
        f"pid {claim.pid} (uid {claim.uid})"
    step = f" for step {claim.step}" if claim.step is not None else ""
    summary = (f"rank {claim.rank} on {node}: a second process claimed it: {claimant} reported"
               f"{step} while {holder} holds the rank; the agent refused its reports")
    since = claim.holder_since if claim.holder_since is not None else claim.ts
    return Fault(
        check="conflicting_report", category="integrity",
        entities=(("claim", node, claim.rank, claim.pid),), summary=summary,
        first_seen=min(since, claim.ts), ts=claim.ts, step=None, ranks=(claim.rank,),
        nodes=(node,), observed=f"pid {claim.pid}", expected=f"pid {claim.holder_pid}",
        score=1.0,
        evidence={"conflicts": 1, "fields": "pid,uid", "first_sources": node,
                  "second_sources": node, "first_ts": since, "second_ts": claim.ts,
                  "first_processes": f"{claim.holder_pid}:{claim.holder_uid}",
                  "second_processes": f"{claim.pid}:{claim.uid}",
                  "holder_pid": claim.holder_pid, "holder_uid": claim.holder_uid,
                  "claimant_pid": claim.pid, "claimant_uid": claim.uid},
    )
