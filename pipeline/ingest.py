"""Decode/validate stage: raw Kafka messages in, table rows, intake items and dead letters out.

Plain Python over plain tuples (no Faust), bytewax-style: every message ends up either
as rows (``oks``) or as a :class:`~trainguard.pipeline.dead_letters.DeadLetter` with the
reason (``errs``); nothing is dropped without a trace. A record whose event time (``ts``)
lies outside a window around its Kafka timestamp and the worker's wall clock is a dead
letter with reason ``clock``: one record from 2096 must not move anybody's time. With
:class:`~trainguard.pipeline.auth.MessageAuth` every message's MAC is checked first (the
cheap part), and a message that is not authenticated, or whose records name another node
than the one that signed it, is a dead letter with reason ``unauthenticated`` and feeds a
``forged_telemetry`` finding (in ``IngestResult.findings``).
``DeadLetter`` and ``RawMessage`` live in :mod:`trainguard.pipeline.dead_letters` and are
re-exported here, :class:`TimeWindow` in :mod:`trainguard.pipeline.window`.

A batch is parsed by msgspec a chunk at a time, and each chunk's records are then checked a
group at a time (:mod:`trainguard.pipeline.ingest_checks`), with the verdicts, reasons and
messages of checking each record alone.
"""

from __future__ import annotations

import operator
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from trainguard.pipeline.auth import MessageAuth, foreign_node
from trainguard.pipeline.caps import IngestCaps
from trainguard.pipeline.dead_letters import DeadLetter, RawMessage
from trainguard.pipeline.ingest_checks import IngestChecks, Verdicts
from trainguard.pipeline.sinks.intake import IntakeItem
from trainguard.pipeline.sinks.rows import Row, rows_for
from trainguard.pipeline.state import partition_key
from trainguard.pipeline.window import TimeWindow
from trainguard.schemas.codec import MAX_RECORD_BYTES, PARSE_ERRORS, RecordDecoder, RecordError
from trainguard.schemas.records import (
    CheckpointEvent,
    Finding,
    GpuSampleBatch,
    Heartbeat,
    Record,
    StepBatch,
    StepRecord,
    WitnessReport,
)
from trainguard.schemas.topics import Topics

__all__ = ["DeadLetter", "IngestResult", "Ingestor", "RawMessage", "TimeWindow"]

_STAMP = operator.attrgetter("timestamp")
_WHERE = operator.attrgetter("topic", "partition")
_PARTITION = operator.attrgetter("partition")
_OFFSET = operator.attrgetter("offset")
#: Messages parsed before their records are checked: few enough that they are still in the
#: CPU's cache (a record of 8 GPUs or ranks and its bytes take ~13 kB), enough that the
#: per-chunk calls cost little.
_CHUNK = 64
#: Input partitions whose source names are kept (a worker reads a few dozen).
_MAX_SOURCES = 4096


class _Sources(dict[tuple[str, int], str]):
    """``(topic, partition)`` → its source name (:func:`partition_key`), made once each."""

    def __missing__(self, where: tuple[str, int]) -> str:
        if len(self) >= _MAX_SOURCES:
            self.clear()
        name = self[where] = partition_key(*where)
        return name


@dataclass
class IngestResult:
    """Rows per table, and what was rejected, for one batch of messages."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    #: Intake items ``(record, partition, offset)`` by intake name: the sample and step
    #: batches (the bulk), stored as columns (:mod:`trainguard.pipeline.sinks.intake`).
    lines: dict[str, list[IntakeItem]] = field(default_factory=lambda: defaultdict(list))
    dead: list[DeadLetter] = field(default_factory=list)
    #: The decoded records, in message order, for the analytics stages, and the input
    #: partition (``topic:partition``) each came from.
    decoded: list[Record] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: The message each decoded record came from (what a later stage dead-letters).
    messages: list[RawMessage] = field(default_factory=list)
    #: Each decoded record's Kafka timestamp (seconds; ``None`` when the message had none),
    #: for the per-node clock skew.
    broker_ts: list[float | None] = field(default_factory=list)
    #: ``forged_telemetry`` findings raised by refused messages (aggregated per source).
    findings: list[Finding] = field(default_factory=list)

    @property
    def records(self) -> int:
        """How many messages decoded into valid records."""
        return len(self.decoded)


class Ingestor:
    """Decodes messages of the input topics with one strict decoder per topic.

    ``caps`` bounds what the schema cannot (world size, unique GPU indices: see
    :mod:`.caps`); ``window`` bounds each record's event time (see :class:`TimeWindow`);
    ``clock`` is the worker's wall clock; ``auth`` checks who sent each message (none:
    nobody is asked).
    """

    def __init__(self, topics: Topics, caps: IngestCaps | None = None, *,
                 window: TimeWindow | None = None, auth: MessageAuth | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        #: Bounds beyond the schema's (world size, unique GPU indices): see :mod:`.caps`.
        self.caps = caps or IngestCaps()
        self.window = window or TimeWindow()
        self.auth = auth
        self._clock = clock
        self._decoders: dict[str, RecordDecoder[Any]] = {
            topics.samples: RecordDecoder(GpuSampleBatch),
            topics.steps: RecordDecoder(
                StepBatch | StepRecord | CheckpointEvent | WitnessReport),
            topics.heartbeats: RecordDecoder(Heartbeat),
        }
        #: msgspec's own decode per topic, for the batch's hot loop (see :meth:`_parse`).
        self._parsers = {topic: d.parse_unchecked for topic, d in self._decoders.items()}
        self._checks = IngestChecks(self._decoders, self.caps, self.window)
        self._sources = _Sources()
        #: Rejections since start, by reason: the visible count of what was dropped.
        self.rejected: dict[str, int] = defaultdict(int)
        self.accepted = 0

    def ingest(self, messages: list[RawMessage]) -> IngestResult:
        """Decode ``messages``; every one lands in ``rows``, ``lines`` or ``dead``."""
        result = IngestResult()
        now = self._clock()
        records: list[Any] = []
        verdicts = Verdicts()
        for start in range(0, len(messages), _CHUNK):
            # A chunk's records are checked while they are still in the CPU's cache.
            records += self._parse(result, messages[start:start + _CHUNK], now)
            self._checks.judge(records, messages, now, start=start, out=verdicts)
        if verdicts.refused:
            self._refuse(result, records, messages, verdicts.refused)
        kept: list[RawMessage] = messages
        decoded: list[Any] = records
        if result.dead:
            decoded = [r for r in records if r is not None]
            kept = [m for m, r in zip(messages, records, strict=True) if r is not None]
        result.decoded, result.messages = decoded, list(kept)
        result.broker_ts = list(map(_STAMP, kept))
        result.sources = list(map(self._sources.__getitem__, map(_WHERE, kept)))
        for table, idx in verdicts.intake.items():
            result.lines[table] = list(zip(map(records.__getitem__, idx),
                                           map(_PARTITION, map(messages.__getitem__, idx)),
                                           map(_OFFSET, map(messages.__getitem__, idx)),
                                           strict=True))
        for i in verdicts.rows:
            msg = messages[i]
            for table, row in rows_for(records[i], msg.partition, msg.offset):
                result.rows[table].append(row)
        self.accepted += result.records
        return result

    def _parse(self, result: IngestResult, messages: list[RawMessage],
               now: float) -> list[Any]:
        """Each message's record as msgspec parsed it; ``None`` for one refused (dead)."""
        if self.auth is not None:
            return [self._admit(result, msg, now) for msg in messages]
        parsers = self._parsers
        out: list[Any] = []
        append = out.append
        for msg in messages:
            parse, value = parsers.get(msg.topic), msg.value
            if parse is not None and value is not None and len(value) <= MAX_RECORD_BYTES:
                try:
                    append(parse(value))
                    continue
                except PARSE_ERRORS:
                    pass
            append(self._admit(result, msg, now))
        return out

    def _refuse(self, result: IngestResult, records: list[Any], messages: list[RawMessage],
                refused: list[tuple[int, str, str]]) -> None:
        """Dead-letter the records refused after parsing, in message order with the rest."""
        early = result.dead
        at = [i for i, r in enumerate(records) if r is None] if early else []
        late: list[tuple[int, DeadLetter]] = []
        for i, reason, message in refused:
            self.rejected[reason] += 1
            late.append((i, DeadLetter(messages[i], reason, message)))
            records[i] = None
        merged = sorted([*zip(at, early, strict=True), *late], key=lambda pair: pair[0])
        result.dead = [dead for _, dead in merged]

    def _admit(self, result: IngestResult, msg: RawMessage, now: float) -> Record | None:
        """``msg``'s record as parsed, or None when it is refused (a dead letter, counted).

        Checks the MAC first (with ``auth``); a signed record that names another node than
        its signer is refused only once its names and version pass (as a decode did).
        """
        decoder = self._decoders.get(msg.topic)
        if decoder is None:
            self._reject(result, msg, "wrong_topic", f"no decoder for topic {msg.topic!r}")
            return None
        signer: str | None = None
        if self.auth is not None:
            verdict = self.auth.verify(msg)
            signer = verdict.node
            if signer is None and self.auth.required:
                claim = _claim(msg)
                self._forged(result, msg, verdict.claimed or claim.node, None,
                             verdict.why or "no_mac", now, cluster=claim.cluster)
                return None
        other: str | None = None
        try:
            record: Record = decoder.parse(msg.value)
            if signer is not None:
                other = foreign_node(record, signer)
                if other is not None:
                    decoder.verify(record, msg.value)
        except RecordError as exc:
            self._reject(result, msg, exc.reason, exc.message)
            return None
        if other is not None and signer is not None and \
                self._wrong_node(result, msg, other, signer, record, now):
            return None
        return record

    def _reject(self, result: IngestResult, msg: RawMessage, reason: str, message: str) -> None:
        self.rejected[reason] += 1
        result.dead.append(DeadLetter(msg, reason, message))

    def _wrong_node(self, result: IngestResult, msg: RawMessage, claimed: str, signer: str,
                    record: Record, now: float) -> bool:
        """A good MAC from ``signer`` on records of ``claimed``: True when it is refused."""
        assert self.auth is not None
        self.auth.wrong_node()
        if not self.auth.required:
            return False
        self._forged(result, msg, claimed, signer, "wrong_node", now,
                     cluster=getattr(record, "cluster", None))
        return True

    def _forged(self, result: IngestResult, msg: RawMessage, claimed: str | None,
                signer: str | None, why: str, now: float, *, cluster: str | None = None) -> None:
        """Refuse a message as ``unauthenticated`` and tell the forgery tracker."""
        assert self.auth is not None
        source = f"signed by node {signer!r}" if signer is not None else "no valid MAC"
        self._reject(result, msg, "unauthenticated",
                     f"{why}: claims node {claimed!r}, {source}")
        found = self.auth.tracker.observe(
            claimed, signer, cluster=cluster, why=why, topic=msg.topic,
            ts=msg.timestamp if msg.timestamp is not None else now, now=now)
        if found is not None:
            result.findings.append(found)


class _Claim(msgspec.Struct):
    """What a refused message says about its origin (all other fields are skipped)."""

    node: str | None = None
    cluster: str | None = None


def _claim(msg: RawMessage) -> _Claim:
    """The node and cluster an unauthenticated message names, when it says."""
    try:
        return msgspec.json.decode(msg.value or b"", type=_Claim)
    except (msgspec.MsgspecError, RecursionError, ValueError):
        return _Claim()
