"""Decode/validate stage: raw Kafka messages in, table rows, intake lines and dead letters out.

Plain Python over plain tuples (no Faust), bytewax-style: every message ends up either
as rows (``oks``) or as a :class:`~trainguard.pipeline.dead_letters.DeadLetter` with the
reason (``errs``); nothing is dropped without a trace. ``DeadLetter`` and ``RawMessage``
live in :mod:`trainguard.pipeline.dead_letters` and are re-exported here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from trainguard.pipeline.caps import IngestCaps
from trainguard.pipeline.dead_letters import DeadLetter, RawMessage
from trainguard.pipeline.sinks.intake import intake_line
from trainguard.pipeline.sinks.rows import Row, rows_for
from trainguard.pipeline.state import partition_key
from trainguard.schemas.codec import RecordDecoder, RecordError
from trainguard.schemas.records import (
    CheckpointEvent,
    GpuSampleBatch,
    Heartbeat,
    Record,
    StepBatch,
    StepRecord,
)
from trainguard.schemas.topics import Topics

__all__ = ["DeadLetter", "IngestResult", "Ingestor", "RawMessage"]


@dataclass
class IngestResult:
    """Rows per table, and what was rejected, for one batch of messages."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    #: JSON lines for the store's intake tables (sample and step batches, the bulk).
    lines: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    dead: list[DeadLetter] = field(default_factory=list)
    #: The decoded records, in message order, for the analytics stages, and the input
    #: partition (``topic:partition``) each came from.
    decoded: list[Record] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: The message each decoded record came from (what a later stage dead-letters).
    messages: list[RawMessage] = field(default_factory=list)

    @property
    def records(self) -> int:
        """How many messages decoded into valid records."""
        return len(self.decoded)


class Ingestor:
    """Decodes messages of the input topics with one strict decoder per topic."""

    def __init__(self, topics: Topics, caps: IngestCaps | None = None) -> None:
        #: Bounds beyond the schema's (world size, unique GPU indices): see :mod:`.caps`.
        self.caps = caps or IngestCaps()
        self._decoders: dict[str, RecordDecoder[Any]] = {
            topics.samples: RecordDecoder(GpuSampleBatch),
            topics.steps: RecordDecoder(StepBatch | StepRecord | CheckpointEvent),
            topics.heartbeats: RecordDecoder(Heartbeat),
        }
        #: Rejections since start, by reason: the visible count of what was dropped.
        self.rejected: dict[str, int] = defaultdict(int)
        self.accepted = 0

    def ingest(self, messages: list[RawMessage]) -> IngestResult:
        """Decode ``messages``; every one lands in ``rows`` or ``dead``."""
        result = IngestResult()
        for msg in messages:
            decoder = self._decoders.get(msg.topic)
            if decoder is None:
                self._reject(result, msg, "wrong_topic", f"no decoder for topic {msg.topic!r}")
                continue
            try:
                record = decoder.decode(msg.value)
            except RecordError as exc:
                self._reject(result, msg, exc.reason, exc.message)
                continue
            broken = self.caps.check(record)
            if broken is not None:
                self._reject(result, msg, *broken)
                continue
            line = intake_line(record, msg.partition, msg.offset)
            if line is not None:
                result.lines[line[0]].append(line[1])
            else:
                for table, row in rows_for(record, msg.partition, msg.offset):
                    result.rows[table].append(row)
            result.decoded.append(record)
            result.sources.append(partition_key(msg.topic, msg.partition))
            result.messages.append(msg)
        self.accepted += result.records
        return result

    def _reject(self, result: IngestResult, msg: RawMessage, reason: str, message: str) -> None:
        self.rejected[reason] += 1
        result.dead.append(DeadLetter(msg, reason, message))
