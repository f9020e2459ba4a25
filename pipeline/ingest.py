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
re-exported here.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from trainguard.pipeline.auth import MessageAuth, foreign_node
from trainguard.pipeline.caps import IngestCaps
from trainguard.pipeline.dead_letters import DeadLetter, RawMessage
from trainguard.pipeline.sinks.intake import IntakeItem, intake_item
from trainguard.pipeline.sinks.rows import Row, rows_for
from trainguard.pipeline.sinks.times import STORE_TS_MAX, STORE_TS_MIN
from trainguard.pipeline.state import partition_key
from trainguard.schemas.codec import RecordDecoder, RecordError
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


@dataclass(frozen=True)
class TimeWindow:
    """How far a record's ``ts`` may lie from its Kafka timestamp (and the worker's clock).

    ``ts`` must be within ``[kafka_ts - max_past_s, kafka_ts + max_future_s]``, and the
    Kafka timestamp itself no more than ``max_future_s`` ahead of the worker's wall clock
    (a producer may set it). Without a Kafka timestamp the wall clock stands in for it.
    """

    max_future_s: float = 600.0
    max_past_s: float = 7 * 86400.0

    def why_not(self, ts: float, broker_ts: float | None, now: float) -> str | None:
        """Why ``ts`` is outside the window, in words; ``None`` when it is inside."""
        ref = now if broker_ts is None else broker_ts
        if broker_ts is not None and not broker_ts <= now + self.max_future_s:
            return (f"Kafka timestamp {broker_ts!r} is {broker_ts - now:.0f} s ahead of the "
                    f"worker's clock; at most {self.max_future_s:g} s allowed")
        if not ref - self.max_past_s <= ts <= ref + self.max_future_s:
            side = "ahead of" if not ts < ref else "behind"
            gap = abs(ts - ref) if math.isfinite(ts) else math.inf
            return (f"ts {ts!r} is {gap:.0f} s {side} its Kafka timestamp {ref!r}; expected "
                    f"within -{self.max_past_s:g} s .. +{self.max_future_s:g} s")
        return None

    def why_not_span(self, first: float, last: float, broker_ts: float | None,
                     now: float) -> str | None:
        """Why event times ``first`` .. ``last`` are not all inside; ``None`` when they are.

        The same answer as ``why_not(last, ...) or why_not(first, ...)``; a record inside the
        window (nearly all) costs a few comparisons instead of two calls.
        """
        ref = now if broker_ts is None else broker_ts
        if (broker_ts is None or broker_ts <= now + self.max_future_s) and \
                ref - self.max_past_s <= first <= last <= ref + self.max_future_s:
            return None
        return self.why_not(last, broker_ts, now) or self.why_not(first, broker_ts, now)


def _times(record: Record) -> tuple[float, float]:
    """The earliest and latest event time a record carries."""
    if isinstance(record, StepBatch):
        steps, events = record.steps, record.events
        if steps or events:
            # Rank events move the job's event time as steps do: the same window bounds them.
            times = [s.ts for s in steps]
            if events:
                times += [e.ts for e in events]
            times.append(record.ts)
            return min(times), max(times)
    return record.ts, record.ts


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
        #: Rejections since start, by reason: the visible count of what was dropped.
        self.rejected: dict[str, int] = defaultdict(int)
        self.accepted = 0

    def ingest(self, messages: list[RawMessage]) -> IngestResult:
        """Decode ``messages``; every one lands in ``rows`` or ``dead``."""
        result = IngestResult()
        now = self._clock()
        window = self.window
        sources: dict[tuple[str, int], str] = {}
        decoded, kept, stamps = result.decoded, result.messages, result.broker_ts
        for msg in messages:
            record = self._decode(result, msg, now)
            if record is None:
                continue
            broken = self.caps.check(record)
            if broken is not None:
                self._reject(result, msg, *broken)
                continue
            first, last = _times(record)
            why = window.why_not_span(first, last, msg.timestamp, now)
            if why is not None:
                self._reject(result, msg, "clock", why)
                continue
            # The same times the intake path would check again: decided here once.
            intake = intake_item(record, msg.partition, msg.offset,
                                 storable=STORE_TS_MIN <= first and last <= STORE_TS_MAX)
            if intake is not None:
                result.lines[intake[0]].append(intake[1])
            else:
                for table, row in rows_for(record, msg.partition, msg.offset):
                    result.rows[table].append(row)
            decoded.append(record)
            where = (msg.topic, msg.partition)
            source = sources.get(where)
            if source is None:
                source = sources[where] = partition_key(*where)
            result.sources.append(source)
            kept.append(msg)
            stamps.append(msg.timestamp)
        self.accepted += result.records
        return result

    def _decode(self, result: IngestResult, msg: RawMessage, now: float) -> Record | None:
        """``msg``'s record, or None when it is refused (a dead letter, counted)."""
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
        try:
            record: Record = decoder.decode(msg.value)
        except RecordError as exc:
            self._reject(result, msg, exc.reason, exc.message)
            return None
        if signer is not None:
            other = foreign_node(record, signer)
            if other is not None and self._wrong_node(result, msg, other, signer, record, now):
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
