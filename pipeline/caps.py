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
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

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
