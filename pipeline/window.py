"""The event-time window of ingest: how far a record's ``ts`` may lie from its Kafka timestamp.

A record whose event time lies outside a window around its Kafka timestamp and the worker's
wall clock is a dead letter with reason ``clock``: one record from 2096 must not move
anybody's time. :meth:`TimeWindow.why_not_span` judges one record;
:meth:`TimeWindow.all_inside` a whole batch at once, from the batch's earliest and latest
event time and its messages' Kafka timestamps (the common case: everything inside).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainguard.schemas.records import GpuSampleBatch, Record, StepBatch, StepRecord

__all__ = ["TimeWindow", "batch_times", "record_span"]


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

    def all_inside(self, first: float, last: float, stamps: Sequence[float | None],
                   now: float) -> bool:
        """True when event times ``first`` .. ``last`` are inside for each Kafka timestamp.

        That is, ``why_not_span`` is ``None`` for every record of a batch whose event times
        all lie in ``first`` .. ``last`` and whose messages' Kafka timestamps are ``stamps``.
        False says only that some record may lie outside: ask ``why_not_span`` of each.
        """
        if not stamps:
            return True
        refs: list[float] = [now if s is None else s for s in stamps]
        # NaN passes no comparison below but could hide from min and max: it fails here.
        total = sum(refs) + first + last
        if total != total:
            return False
        low, high = min(refs), max(refs)
        # Each ref lies in low .. high, so a record inside for those bounds is inside for its own.
        return (high <= now + self.max_future_s
                and high - self.max_past_s <= first <= last <= low + self.max_future_s)


def record_span(record: Record) -> tuple[float, float]:
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


def batch_times(records: Sequence[Record], *,
                steps: Sequence[StepRecord] | None = None) -> list[float] | None:
    """Every event time :func:`record_span` reads in ``records``; None unless all are of one kind.

    That kind is sample batches or step batches (``steps``: the step batches' steps, when
    the caller has them).
    """
    kinds = set(map(type, records))
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind is not GpuSampleBatch and kind is not StepBatch:
        return None
    times = [r.ts for r in records]
    if kind is StepBatch:
        batches: Sequence[Any] = records
        times += [s.ts for s in (steps if steps is not None
                                 else [s for b in batches for s in b.steps])]
        times += [e.ts for b in batches for e in b.events]
    return times
