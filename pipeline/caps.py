"""Caps at ingest: what the wire schema cannot bound alone, checked on each decoded record.

The schema bounds lengths and charsets (names, hashes, GPUs per batch); what depends on the
worker's configuration, or relates fields to each other, is checked here, after decoding
and before any stage sees the record:

* ``cap_world_size``: a step record whose world size exceeds ``max_world_size``, or a
  checkpoint event whose rank does. Per-rank state costs memory only for ranks that
  report, but a world size is a promise of that many ranks; past a generous bound it is
  a forgery, not a job.
* ``invalid``: a step record whose rank is not below its world size; a sample batch that
  names one GPU index twice (one node, one tick, one sample per GPU).

Each rejection is a dead letter with its reason, counted by the ingestor like any other.
:meth:`IngestCaps.broken` checks a whole batch of one record type at once (C-level passes
over its steps or GPUs) and asks :meth:`IngestCaps.check` only where a record may break one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from trainguard.errors import ConfigError
from trainguard.schemas.records import (
    CheckpointEvent,
    GpuSampleBatch,
    Record,
    StepBatch,
    StepRecord,
)

__all__ = ["DEFAULT_MAX_WORLD_SIZE", "IngestCaps", "Violation"]

#: A million ranks: far beyond any training job today, low enough to be a sanity bound.
DEFAULT_MAX_WORLD_SIZE = 1 << 20

#: A cap a record broke: the dead letter's reason and its message.
Violation = tuple[str, str]



@dataclass(frozen=True)
class IngestCaps:
    """The configurable bounds checked on every decoded record; validated on construction."""

    #: Step records of a larger world (and checkpoint events of a rank past it) are dead
    #: letters with reason ``cap_world_size``.
    max_world_size: int = DEFAULT_MAX_WORLD_SIZE

    def __post_init__(self) -> None:
        if not isinstance(self.max_world_size, int) or not 1 <= self.max_world_size <= 2**32:
            raise ConfigError(
                f"max_world_size must be an integer within 1..{2**32}, got {self.max_world_size!r}"
            )

    def check(self, record: Record) -> Violation | None:
        """The first cap ``record`` breaks, or None when it keeps them all."""
        if isinstance(record, StepBatch):
            # The hot path (every step of every batch): the comparisons inline, the
            # message only for the record that breaks a cap.
            most = self.max_world_size
            for step in record.steps:
                ws = step.world_size
                if ws > most or step.rank >= ws:
                    return self._step(step)
            return None
        if isinstance(record, StepRecord):
            return self._step(record)
        if isinstance(record, GpuSampleBatch):
            gpus = record.gpus
            if len({gpu.index for gpu in gpus}) == len(gpus):
                return None
            return _unique_gpus(record)
        if isinstance(record, CheckpointEvent) and record.rank >= self.max_world_size:
            return ("cap_world_size",
                    f"job {record.job_id!r}: rank {record.rank} beyond max_world_size "
                    f"{self.max_world_size}")
        return None

    def broken(self, records: Sequence[Record], *,
               steps: Sequence[StepRecord] | None = None) -> list[tuple[int, Violation]]:
        """``(position, violation)`` of each of ``records`` that breaks a cap, in order.

        The verdicts of :meth:`check` on each. A batch of step batches (``steps``: all their
        steps, when the caller has them) or of sample batches is checked in a few C-level
        passes; only a batch where some record may break a cap is checked record by record.
        """
        kinds = set(map(type, records))
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind is StepBatch:
            if _steps_keep_caps([s for r in records for s in r.steps]  # type: ignore[union-attr]
                                if steps is None else steps, self.max_world_size):
                return []
        elif kind is GpuSampleBatch:
            if _gpus_in_order(records):  # type: ignore[arg-type]
                return []
        return [(k, v) for k, record in enumerate(records)
                if (v := self.check(record)) is not None]

    def _step(self, step: StepRecord) -> Violation | None:
        if step.world_size > self.max_world_size:
            return ("cap_world_size",
                    f"job {step.job_id!r} rank {step.rank}: world_size {step.world_size} "
                    f"exceeds max_world_size {self.max_world_size}")
        if step.rank >= step.world_size:
            return ("invalid",
                    f"job {step.job_id!r}: rank {step.rank} is not below its world_size "
                    f"{step.world_size}")
        return None


def _unique_gpus(batch: GpuSampleBatch) -> Violation | None:
    indices = [gpu.index for gpu in batch.gpus]
    if len(set(indices)) == len(indices):
        return None
    twice = sorted(i for i, n in Counter(indices).items() if n > 1)
    return ("invalid",
            f"node {batch.node!r}: GPU index {', '.join(map(str, twice))} reported more "
            "than once in one sample batch")


def _steps_keep_caps(steps: Sequence[StepRecord], most: int) -> bool:
    """Whether every step's world size is within ``most`` and its rank below it."""
    # Comprehensions: their attribute loads are the interpreter's fastest (no getattr call).
    return not steps or (max([s.world_size for s in steps]) <= most
                         and not [s for s in steps if s.rank >= s.world_size])


def _gpus_in_order(batches: Sequence[GpuSampleBatch]) -> bool:
    """Whether each batch's GPU indices are 0, 1, 2, ... (so unique): what agents send."""
    gpus = [b.gpus for b in batches]
    indices = [g.index for each in gpus for g in each]
    return indices == list(chain.from_iterable(map(range, map(len, gpus))))
