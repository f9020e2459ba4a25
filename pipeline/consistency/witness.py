"""``witness_mismatch``: what the trainers report against what the node agent hashed itself.

**Checkpoints.** A save names its shard's file (``path``, or a ``checkpoint_id`` that is an
absolute path) and its digest; the agent's witness on the node hashes the same file once
it is closed after writing (SHA-256 of its bytes). Per path the watch remembers the
digests saved and the digests witnessed. A save is confirmed by a witness report of the
same path and digest, and a witness report by a save of the same path and digest, in
either order: each waits up to ``witness_wait_s`` of the job's event time for its match
(the witness hashes within a budget, so a large shard's report may come minutes after
the save). When the wait is over:

* a save of a path the witness reported, but never with the save's digest: the trainer
  reported a digest the file does not have;
* a witness report of a saved path with a digest no save reported, once the save's own
  digest was witnessed: the file changed on disk after it was saved. A version that last
  changed before the save (the file still being written) is not one.

A save of a path the witness never reported (outside its directories, or no witness
configured) is counted, ``unwitnessed_saves``; a file that no save names is not one of the
job's checkpoints and is ignored. At most ``max_paths`` paths are remembered; a new one
beyond it evicts the least recently seen only when that is ``keep_s`` old, else it is
refused and counted (``witness_refused``), so forged saves cannot push out real ones.

**Code.** A ``code`` / ``framework`` report's digest is remembered per node and tree for
the job (the first the job sees is the baseline); a later one with another digest means
files of the tree changed while the job ran, and the finding names them.
"""

from __future__ import annotations

import heapq
import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from trainguard.pipeline.consistency.agreement import short
from trainguard.pipeline.consistency.findings import Fault
from trainguard.schemas.records import CheckpointEvent, WitnessReport

__all__ = ["WitnessWatch", "shard_path"]

#: Digests remembered per path and side (saves, witnessed): a path rewritten by every
#: checkpoint (``latest.pt``) keeps its recent versions.
_DIGESTS_PER_PATH: Final = 8
#: Changed files a code finding names in its summary.
_NAMED_FILES: Final = 5

_V = TypeVar("_V")


def shard_path(ev: CheckpointEvent) -> str | None:
    """The file a save names: its ``path``, or its ``checkpoint_id`` when that is a path."""
    if ev.path is not None:
        return posixpath.normpath(ev.path)
    return posixpath.normpath(ev.checkpoint_id) if ev.checkpoint_id.startswith("/") else None


@dataclass(frozen=True, slots=True)
class _Save:
    rank: int
    node: str
    step: int
    ts: float


@dataclass(frozen=True, slots=True)
class _Seen:
    node: str
    ts: float
    #: When the file last changed (its modification or status-change time).
    changed_at: float


@dataclass(slots=True)
class _Path:
    """One file's saved and witnessed digests (most recent last)."""

    saves: dict[str, _Save] = field(default_factory=dict)
    seen: dict[str, _Seen] = field(default_factory=dict)
    last_ts: float = -math.inf


class WitnessWatch:
    """One job's saves and witness reports per file, and its code trees' baselines."""

    def __init__(self, wait_s: float, max_paths: int, keep_s: float) -> None:
        self.wait_s = wait_s
        self.max_paths = max_paths
        self.keep_s = keep_s
        self._paths: dict[str, _Path] = {}
        #: (deadline, sequence, side, path, digest): what waits for its match.
        self._due: list[tuple[float, int, Literal["save", "seen"], str, str]] = []
        self._seq = 0
        self._trees: dict[tuple[str, str], str] = {}
        self.saves_witnessed = 0
        self.unwitnessed_saves = 0
        self.refused = 0

    @property
    def pending(self) -> bool:
        """True while a save or a witness report waits for its match."""
        return bool(self._due)

    def saves(self, events: Sequence[CheckpointEvent]) -> None:
        """Remember the saves among ``events`` that name a file."""
        for ev in events:
            path = shard_path(ev) if ev.action == "save" else None
            if path is None:
                continue
            digest = ev.digest.lower()
            entry = self._entry(path, ev.ts)
            if entry is None or digest in entry.saves:
                continue
            _put(entry.saves, digest, _Save(ev.rank, ev.node, ev.step, ev.ts))
            self._wait("save", path, digest, ev.ts)

    def reports(self, reports: Sequence[WitnessReport]) -> list[Fault]:
        """Remember checkpoint reports; return the code trees' changes as faults."""
        faults: list[Fault] = []
        for rep in reports:
            if rep.digest is None:
                continue
            digest = rep.digest.lower()
            if rep.subject != "checkpoint":
                fault = self._tree(rep, digest)
                if fault is not None:
                    faults.append(fault)
                continue
            path = posixpath.normpath(rep.path)
            entry = self._entry(path, rep.ts)
            if entry is None or digest in entry.seen:
                continue
            changed = rep.changed_at if rep.changed_at is not None else rep.ts
            _put(entry.seen, digest, _Seen(rep.node, rep.ts, changed))
            self._wait("seen", path, digest, rep.ts)
        return faults

    def due(self, now: float) -> list[Fault]:
        """Judge what waited ``wait_s`` by event time ``now`` without its match."""
        faults: list[Fault] = []
        while self._due and self._due[0][0] <= now:
            _, _, side, path, digest = heapq.heappop(self._due)
            entry = self._paths.get(path)
            if entry is None:
                continue
            if side == "save":
                fault = self._judge_save(path, digest, entry)
            else:
                fault = self._judge_seen(path, digest, entry)
            if fault is not None:
                faults.append(fault)
        return faults

    def _judge_save(self, path: str, digest: str, entry: _Path) -> Fault | None:
        save = entry.saves.get(digest)
        if save is None:
            return None  # pushed out by newer saves of the path
        if digest in entry.seen:
            self.saves_witnessed += 1
            return None
        if not entry.seen:
            self.unwitnessed_saves += 1
            return None
        witnessed, seen = next(reversed(entry.seen.items()))
        return _not_witnessed(path, save, digest, seen, witnessed)

    def _judge_seen(self, path: str, digest: str, entry: _Path) -> Fault | None:
        seen = entry.seen.get(digest)
        if seen is None or digest in entry.saves or not entry.saves:
            return None
        saved, save = next(reversed(entry.saves.items()))
        if seen.changed_at < save.ts:
            # A version written before the save: the file was still being written (a save
            # whose digest is never witnessed is judged on its own).
            return None
        if saved not in entry.seen:
            # Changed after the save, which the witness never saw with the saved digest.
            return _not_witnessed(path, save, saved, seen, digest)
        summary = (f"the agent on {seen.node} hashed {path} as {short(digest)}, a digest no "
                   f"rank reported saving; rank {save.rank} on {save.node} saved it (step "
                   f"{save.step}) as {short(saved)}: the file changed after it was saved")
        return _fault("changed_after_save", path, summary, save, saved, seen, digest)

    def _tree(self, rep: WitnessReport, digest: str) -> Fault | None:
        key = (rep.node, rep.path)
        baseline = self._trees.get(key)
        if baseline is None and len(self._trees) >= self.max_paths:
            self.refused += 1
            return None
        self._trees[key] = digest
        if baseline is None or baseline == digest:
            return None
        # An agent restarted between two passes has no previous pass to name files from.
        named = ", ".join(rep.changed_files[:_NAMED_FILES]) or "files not named (agent restarted)"
        more = rep.changed_count - min(len(rep.changed_files), _NAMED_FILES)
        what = "framework source" if rep.subject == "framework" else "job code"
        summary = (f"{what} {rep.path} on {rep.node} changed while the job ran: {named}"
                   f"{f' and {more} more files' if more > 0 else ''}")
        return Fault(
            check="witness_mismatch", category="integrity",
            entities=(("witness", rep.node, rep.path, digest),), summary=summary,
            first_seen=rep.ts, ts=rep.ts, nodes=(rep.node,), observed=digest,
            expected=baseline, score=float(rep.changed_count),
            evidence={"kind": f"{rep.subject}_changed", "path": rep.path,
                      "changed_files": "\n".join(rep.changed_files),
                      "changed_count": rep.changed_count, "witness_node": rep.node})

    def _entry(self, path: str, ts: float) -> _Path | None:
        entry = self._paths.pop(path, None)  # re-inserted last: the most recently seen
        if entry is None and len(self._paths) >= self.max_paths:
            oldest_path, oldest = next(iter(self._paths.items()))
            if ts - oldest.last_ts < self.keep_s:
                self.refused += 1
                return None
            del self._paths[oldest_path]
        entry = entry if entry is not None else _Path()
        entry.last_ts = max(entry.last_ts, ts)
        self._paths[path] = entry
        return entry

    def _wait(self, side: Literal["save", "seen"], path: str, digest: str, ts: float) -> None:
        self._seq += 1
        heapq.heappush(self._due, (ts + self.wait_s, self._seq, side, path, digest))


def _put(table: dict[str, _V], digest: str, value: _V) -> None:
    """Add ``digest`` last; the oldest goes beyond ``_DIGESTS_PER_PATH``."""
    table[digest] = value
    while len(table) > _DIGESTS_PER_PATH:
        del table[next(iter(table))]


def _not_witnessed(path: str, save: _Save, saved: str, seen: _Seen, witnessed: str) -> Fault:
    summary = (f"rank {save.rank} on {save.node} reported saving {path} (step {save.step}) "
               f"with digest {short(saved)}, but the agent on {seen.node} hashed the file as "
               f"{short(witnessed)}")
    return _fault("save_not_witnessed", path, summary, save, saved, seen, witnessed)


def _fault(kind: str, path: str, summary: str, save: _Save, saved: str, seen: _Seen,
           witnessed: str) -> Fault:
    return Fault(
        check="witness_mismatch", category="integrity",
        entities=(("witness", path, saved, witnessed),), summary=summary,
        first_seen=min(save.ts, seen.ts), ts=max(save.ts, seen.ts), step=save.step,
        ranks=(save.rank,), nodes=tuple(sorted({save.node, seen.node})),
        observed=saved, expected=witnessed, score=1.0,
        evidence={"kind": kind, "path": path, "trainer_digest": saved,
                  "witness_digest": witnessed, "witness_node": seen.node,
                  "witness_ts": seen.ts, "save_node": save.node})
