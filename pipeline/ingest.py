"""Decode/validate stage: raw Kafka messages in, table rows, intake lines and dead letters out.

Plain Python over plain tuples (no Faust), bytewax-style: every message ends up either
as rows (``oks``) or as a :class:`DeadLetter` with the reason (``errs``); nothing is
dropped without a trace.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

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

#: How much of a rejected payload is kept in the store (the topic keeps all of it).
_PAYLOAD_HEAD = 512


@dataclass(frozen=True)
class RawMessage:
    """One message as read from Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A rejected message with why it was rejected."""

    source: RawMessage
    reason: str
    message: str

    def headers(self, worker: str) -> list[tuple[str, bytes]]:
        """Kafka headers carried by the dead-letter copy of the message."""
        return [
            ("tg.error.reason", self.reason.encode()),
            ("tg.error.message", self.message.encode()[:2048]),
            ("tg.source.topic", self.source.topic.encode()),
            ("tg.source.partition", str(self.source.partition).encode()),
            ("tg.source.offset", str(self.source.offset).encode()),
            ("tg.worker", worker.encode()),
        ]

    def row(self) -> Row:
        """The ``dead_letters`` table row."""
        payload = self.source.value or b""
        return {
            "topic": self.source.topic,
            "partition": self.source.partition,
            "offset": self.source.offset,
            "reason": self.reason,
            "message": self.message[:2048],
            "payload_head": payload[:_PAYLOAD_HEAD].decode("utf-8", errors="backslashreplace"),
            "payload_size": len(payload),
            "ts": self.source.timestamp if self.source.timestamp is not None else time.time(),
        }


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

    @property
    def records(self) -> int:
        """How many messages decoded into valid records."""
        return len(self.decoded)


class Ingestor:
    """Decodes messages of the input topics with one strict decoder per topic."""

    def __init__(self, topics: Topics) -> None:
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
            line = intake_line(record, msg.partition, msg.offset)
            if line is not None:
                result.lines[line[0]].append(line[1])
            else:
                for table, row in rows_for(record, msg.partition, msg.offset):
                    result.rows[table].append(row)
            result.decoded.append(record)
            result.sources.append(partition_key(msg.topic, msg.partition))
        self.accepted += result.records
        return result

    def _reject(self, result: IngestResult, msg: RawMessage, reason: str, message: str) -> None:
        self.rejected[reason] += 1
        result.dead.append(DeadLetter(msg, reason, message))
