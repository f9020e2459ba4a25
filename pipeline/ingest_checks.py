"""What ingest checks after msgspec has parsed a batch: a group of records at a time.

Every parsed record must still pass, in this order: its strict names and schema version
(:meth:`~trainguard.schemas.codec.RecordDecoder.verify`), the caps
(:class:`~trainguard.pipeline.caps.IngestCaps`) and the event-time window
(:class:`~trainguard.pipeline.window.TimeWindow`); it is then an intake item when the
store's columns hold its times, else it takes the row path. The two intake types (sample
and step batches: nearly all the traffic) are checked as one group per type, in C-level
passes over the whole group (names gathered into one set, the steps' world sizes and
ranks compared with ``map``, the earliest and latest event time against the messages'
Kafka timestamps). Where a group check does not pass, every record of that group is
checked alone, so each verdict, reason and message is exactly the one-record check's;
records of any other type are always checked alone.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from trainguard.pipeline.caps import IngestCaps
from trainguard.pipeline.dead_letters import RawMessage
from trainguard.pipeline.sinks.intake import INTAKE_TABLES
from trainguard.pipeline.sinks.times import STORE_TS_MAX, STORE_TS_MIN
from trainguard.pipeline.window import TimeWindow, batch_times, record_span
from trainguard.schemas.codec import RecordDecoder, RecordError, all_verified
from trainguard.schemas.records import GpuSampleBatch, Record, StepBatch

__all__ = ["IngestChecks", "Verdicts"]

#: Record types checked a group at a time.
_GROUPED = frozenset({GpuSampleBatch, StepBatch}) & frozenset(INTAKE_TABLES)
#: The type of a record that is ``None``: refused before the checks.
_REFUSED = type(None)
_STEPS = operator.attrgetter("steps")
_STAMP = operator.attrgetter("timestamp")


@dataclass
class Verdicts:
    """Where each parsed record of a batch goes, by its message's index in the batch."""

    #: ``(index, reason, message)`` of each refused record, in message order.
    refused: list[tuple[int, str, str]] = field(default_factory=list)
    #: The records stored as intake items, by intake name (in order of first index), each
    #: list in message order.
    intake: dict[str, list[int]] = field(default_factory=dict)
    #: The records that take the row path, in message order.
    rows: list[int] = field(default_factory=list)


class IngestChecks:
    """The checks after parsing, with the decoders (by topic), caps and window of ingest."""

    def __init__(self, decoders: Mapping[str, RecordDecoder[Any]], caps: IngestCaps,
                 window: TimeWindow) -> None:
        self.decoders, self.caps, self.window = decoders, caps, window

    def judge(self, records: Sequence[Record | None], messages: Sequence[RawMessage],
              now: float, *, start: int = 0, stop: int | None = None,
              out: Verdicts | None = None) -> Verdicts:
        """The verdicts on ``records`` (``None``: refused already), parsed from ``messages``.

        Only those from ``start`` to ``stop``, added to ``out`` (after the verdicts on the
        records before ``start``), when given.
        """
        stop = len(records) if stop is None else stop
        kinds = list(map(type, records[start:stop]))
        distinct = dict.fromkeys(kinds)
        if len(distinct) == 1 and _REFUSED not in distinct:
            groups = {kinds[0]: list(range(start, stop))}
        else:
            distinct.pop(_REFUSED, None)
            groups = {kind: [i for i, k in enumerate(kinds, start) if k is kind]
                      for kind in distinct}
        out = Verdicts() if out is None else out
        mine = Verdicts()
        for kind, idx in groups.items():
            if kind in _GROUPED and self._group(kind, idx, records, messages, now, mine):
                continue
            for i in idx:
                self._place(i, records[i], messages[i], now, mine, verify=True)
        if len(groups) > 1:
            mine.refused.sort()
            mine.rows.sort()
            mine.intake = dict(sorted(mine.intake.items(), key=lambda item: item[1][0]))
        out.refused += mine.refused
        out.rows += mine.rows
        for table, idx in mine.intake.items():
            if table in out.intake:
                out.intake[table] += idx
            else:
                out.intake[table] = idx
        return out

    def _group(self, kind: type, idx: list[int], records: Sequence[Record | None],
               messages: Sequence[RawMessage], now: float, out: Verdicts) -> bool:
        """Check the group ``idx`` of ``kind`` at once; False when it must be checked alone.

        Once the names and versions have passed, the records are checked alone without them.
        """
        recs: list[Any] = list(map(records.__getitem__, idx))
        if not all_verified(recs):
            return False
        steps = list(chain.from_iterable(map(_STEPS, recs))) if kind is StepBatch else None
        times = batch_times(recs, steps=steps)
        if not self.caps.broken(recs, steps=steps) and times:
            first, last = min(times), max(times)
            msgs = list(map(messages.__getitem__, idx))
            if STORE_TS_MIN <= first and last <= STORE_TS_MAX and \
                    self.window.all_inside(first, last, list(map(_STAMP, msgs)), now):
                out.intake[INTAKE_TABLES[kind]] = idx
                return True
        for i, record in zip(idx, recs, strict=True):
            self._place(i, record, messages[i], now, out, verify=False)
        return True

    def _place(self, i: int, record: Record | None, msg: RawMessage, now: float,
               out: Verdicts, *, verify: bool) -> None:
        """Check one record alone (its names and version too with ``verify``)."""
        assert record is not None
        refused = self._refusal(record, msg, now, verify=verify)
        if isinstance(refused, tuple):
            out.refused.append((i, *refused))
            return
        table = INTAKE_TABLES.get(type(record)) if refused else None
        if table is None:
            out.rows.append(i)
        else:
            out.intake.setdefault(table, []).append(i)

    def _refusal(self, record: Record, msg: RawMessage, now: float, *,
                 verify: bool) -> tuple[str, str] | bool:
        """``(reason, message)`` of a refused ``record``; else whether the store holds its times."""
        if verify:
            try:
                self.decoders[msg.topic].verify(record, msg.value)
            except RecordError as exc:
                return exc.reason, exc.message
        broken = self.caps.check(record)
        if broken is not None:
            return broken
        first, last = record_span(record)
        why = self.window.why_not_span(first, last, msg.timestamp, now)
        if why is not None:
            return "clock", why
        return STORE_TS_MIN <= first and last <= STORE_TS_MAX
