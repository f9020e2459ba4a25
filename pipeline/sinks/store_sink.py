"""The store sink: one insert per table per batch; refused rows dead-lettered, outages waited out.

At-least-once: the caller acknowledges (commits) the Kafka offsets of a batch only
after :meth:`StoreSink.write` returned, and every table is a ReplacingMergeTree keyed on
the record's identity, so a batch written twice (a retry, or a replay after a crash)
leaves one row. A failed insert is one of two things (:mod:`trainguard.pipeline.store.errors`):

- **The store refused the data** (:class:`~trainguard.pipeline.store.errors.StoreDataError`:
  a value it cannot hold, a block over too many partitions). The batch is bisected until
  the rows at fault stand alone; each becomes a dead letter (reason
  :data:`STORE_REJECTED`, the store's message, the bytes of the message it came from)
  and every other row is written. Rows whose times the store cannot hold are dead
  letters before any insert (reason ``clock``, :mod:`trainguard.pipeline.sinks.times`).
- **The store is unreachable or unwell.** ``write`` blocks and retries with backoff, so
  the worker stops consuming (explicit backpressure, nothing dropped). After
  ``retry_for_s`` the store is declared down: one error line, ``store_down`` in the
  counters (and ``pipeline_health`` once it is back), and the retries go on. The worker
  stays up, paused, instead of exiting into a restart loop that re-reads the same input
  and fails the same way; it resumes by itself when the store answers. Only
  :meth:`StoreSink.close` (shutdown) makes a waiting write give up with StoreError: its
  offsets are never committed, so its batch is read again after the restart.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from trainguard.errors import StoreError
from trainguard.pipeline.dead_letters import DeadLetter, RawMessage
from trainguard.pipeline.sinks.column_rows import ColumnRows
from trainguard.pipeline.sinks.intake import IntakeItem, intake_tables
from trainguard.pipeline.sinks.latency import LatencyHistogram
from trainguard.pipeline.sinks.rows import Row
from trainguard.pipeline.sinks.sources import SourceOf
from trainguard.pipeline.sinks.times import CLOCK_REASON, TIME_COLUMNS, row_time_error
from trainguard.pipeline.store.base import Store
from trainguard.pipeline.store.errors import StoreDataError

__all__ = ["STORE_REJECTED", "SinkCounters", "StoreSink", "WriteResult"]

log = logging.getLogger(__name__)

#: Dead-letter reason of a row the store refused to take.
STORE_REJECTED = "store_rejected"
#: Topic named in the dead letter of a refused row that no input message made.
OWN_TOPIC_PREFIX = "store."

DEAD_LETTERS = "dead_letters"

_T = TypeVar("_T")
_encoder = msgspec.json.Encoder()


@dataclass
class SinkCounters:
    """What the sink did since start."""

    batches: int = 0
    rows: int = 0
    #: Intake records (sample and step batches) written as columns
    #: (:mod:`trainguard.pipeline.sinks.intake`).
    lines: int = 0
    retries: int = 0
    last_batch_s: float = 0.0
    #: Every batch write's duration (the ``last_batch_s`` of each), for ``/metrics``.
    batch_seconds: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: Dead letters the sink made (refused by the store, times out of range), by reason.
    rejected: dict[str, int] = field(default_factory=dict)
    #: True while the store has failed for longer than the sink's ``retry_for_s``.
    store_down: bool = False
    #: How many times the store was declared down since start.
    outages: int = 0


@dataclass(frozen=True)
class WriteResult:
    """What one write stored, and the dead letters of what it could not (already stored)."""

    written: int
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True)
class _Refused:
    table: str
    index: int
    item: bytes | Row | IntakeItem
    reason: str
    message: str


class StoreSink:
    """Writes row batches to a :class:`Store`; refused rows become dead letters."""

    def __init__(
        self,
        store: Store,
        *,
        retry_for_s: float = 600.0,
        max_backoff_s: float = 10.0,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
        log_every_s: float = 10.0,
    ) -> None:
        self._store = store
        self._retry_for_s = retry_for_s
        self._max_backoff_s = max_backoff_s
        self._stop = stop or threading.Event()
        self._sleep = sleep if sleep is not None else self._stop.wait
        self._clock, self._wall = clock, wall
        self._log_every_s = log_every_s
        self._last_log = -float("inf")
        self._unlogged = 0
        self.counters = SinkCounters()

    def close(self) -> None:
        """Shutting down: a write waiting for the store gives up (its batch is replayed)."""
        self._stop.set()

    def write(
        self,
        rows: Mapping[str, Sequence[Row]],
        lines: Mapping[str, Sequence[IntakeItem] | Sequence[bytes]] | None = None,
        sources: SourceOf | None = None,
    ) -> WriteResult:
        """Insert every intake's records and every table's rows; refused ones become dead letters.

        ``lines`` are intake items by intake name (:mod:`~trainguard.pipeline.sinks.intake`),
        each name's items stored as columns in one insert per table; ready JSONEachRow
        lines (bytes) are inserted as they are. ``sources`` names the message behind a row
        or intake item (``(table, index)``); without
        it, or for rows no message made, a dead letter carries the row's own bytes. The
        dead letters are in the ``dead_letters`` table when this returns; the caller may
        copy them to the dead-letter topic. Raises StoreError only when closed.
        """
        started = self._clock()
        refused: list[_Refused] = []
        n_lines = n_rows = 0
        for table, blines in (lines or {}).items():
            if blines:
                bad = self._retrying(started, functools.partial(self._bisect, table, blines, 0))
                refused.extend(_Refused(table, i, blines[i], STORE_REJECTED, m) for i, m in bad)
                n_lines += len(blines) - len(bad)
        for table, batch in rows.items():
            if batch:
                before = len(refused)
                self._write_rows(started, table, batch, refused)
                n_rows += len(batch) - (len(refused) - before)
        dead = self._dead_letters(refused, sources)
        if dead:
            rows_dead = [self._dated(d.row(self._wall)) for d in dead]
            lost = self._retrying(started,
                                  functools.partial(self._bisect, DEAD_LETTERS, rows_dead, 0))
            for i, message in lost:  # a dead letter the store refuses: the log keeps it
                log.error("dead letter refused by the store reason=%s error=%s row=%r",
                          dead[i].reason, message, rows_dead[i])
        self.counters.batches += 1
        self.counters.rows += n_rows
        self.counters.lines += n_lines
        self.counters.last_batch_s = self._clock() - started
        self.counters.batch_seconds.observe(self.counters.last_batch_s)
        return WriteResult(written=n_rows + n_lines, dead=dead)

    def _dated(self, row: Row) -> Row:
        """Give a dead-letter row a storable time: a dead letter is never refused for it.

        Its time is the Kafka record's, which a producer sets; an absurd one is replaced by
        the time it is written.
        """
        if row_time_error(DEAD_LETTERS, row) is None:
            return row
        return {**row, "ts": self._wall()}

    def _write_rows(self, started: float, table: str, batch: Sequence[Row],
                    refused: list[_Refused]) -> None:
        if isinstance(batch, ColumnRows) and batch.times_storable(TIME_COLUMNS):
            # Columns whose times all fit (a baselines snapshot): one block, no row loop.
            keep: Sequence[int] = range(len(batch))
        else:
            if table == DEAD_LETTERS:
                batch = [self._dated(row) for row in batch]
            keep = self._storable_times(table, batch, refused)
        if not keep:
            return
        kept = batch if len(keep) == len(batch) else [batch[i] for i in keep]
        bad = self._retrying(started, functools.partial(self._bisect, table, kept, 0))
        refused.extend(_Refused(table, keep[i], kept[i], STORE_REJECTED, m) for i, m in bad)

    @staticmethod
    def _storable_times(table: str, batch: Sequence[Row], refused: list[_Refused]) -> list[int]:
        """Indices of the rows whose times the store can hold; the others are refused."""
        keep: list[int] = []
        for i, row in enumerate(batch):
            error = row_time_error(table, row)
            if error is None:
                keep.append(i)
            else:
                refused.append(_Refused(table, i, row, CLOCK_REASON, error))
        return keep

    def _insert(self, table: str, items: Sequence[Any]) -> None:
        if not items:
            return
        if isinstance(items, ColumnRows):
            self._store.insert_arrow(table, items.table)
        elif isinstance(items[0], tuple):  # intake items: one column block per stored table
            for stored, data in intake_tables(table, items).items():
                self._store.insert_arrow(stored, data)
        elif isinstance(items[0], bytes):
            self._store.insert_json_lines(table, items)
        else:
            self._store.insert_rows(table, items)

    def _bisect(self, table: str, items: Sequence[Any], base: int) -> list[tuple[int, str]]:
        """Insert ``items``; on refused data, halves until the refused ones stand alone.

        An intake item's tables are inserted one after the other: when a later one refuses,
        the retried half writes the earlier ones again, which their ReplacingMergeTree
        collapses (as it does a replayed batch).

        Returns ``(index, store's message)`` of each refused item. Halving also answers
        a block over the partition limit: the halves span fewer partitions. k bad items
        among n cost about 2·k·log2(n) inserts; a StoreError that is not about the data
        propagates (the caller retries the table).
        """
        try:
            self._insert(table, items)
            return []
        except StoreDataError as exc:
            if len(items) == 1:
                return [(base, str(exc))]
        mid = len(items) // 2
        return (self._bisect(table, items[:mid], base)
                + self._bisect(table, items[mid:], base + mid))

    def _retrying(self, started: float, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` until the store takes it; give up only when closed."""
        backoff = 0.2
        while True:
            try:
                result = attempt()
            except StoreError as exc:
                waited = self._clock() - started
                if self._stop.is_set():
                    raise StoreError(
                        f"giving up on a store write after {waited:.0f}s and "
                        f"{self.counters.retries} retries: the sink is closing; last error: {exc}"
                    ) from exc
                self._failing(waited, backoff, exc)
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            if self.counters.store_down:
                self.counters.store_down = False
                log.warning("store is back; writing and consuming again")
            return result

    def _failing(self, waited: float, backoff: float, exc: StoreError) -> None:
        self.counters.retries += 1
        if waited >= self._retry_for_s and not self.counters.store_down:
            self.counters.store_down = True
            self.counters.outages += 1
            log.error("store down for %.0fs; consumption paused, retrying every %.0fs until it "
                      "is back (the worker stays up) error=%s", waited, self._max_backoff_s, exc)
            return
        log.warning("store write failed; retrying backoff_s=%.1f waited_s=%.0f error=%s",
                    backoff, waited, exc)

    def _dead_letters(self, refused: list[_Refused],
                      sources: SourceOf | None) -> list[DeadLetter]:
        """One dead letter per (message, reason); counted and logged (rate-limited)."""
        dead: dict[tuple[str, int, int, str], DeadLetter] = {}
        for r in refused:
            source = sources(r.table, r.index) if sources is not None else None
            if source is None:
                source = _own_message(r.table, r.item)
            key = (source.topic, source.partition, source.offset, r.reason)
            if key not in dead:
                dead[key] = DeadLetter(source, r.reason, r.message)
                self.counters.rejected[r.reason] = self.counters.rejected.get(r.reason, 0) + 1
        if dead:
            self._log_dead(list(dead.values()))
        return list(dead.values())

    def _log_dead(self, dead: list[DeadLetter]) -> None:
        now = self._clock()
        if now - self._last_log < self._log_every_s:
            self._unlogged += len(dead)
            return
        first = dead[0]
        log.warning("store sink dead-lettered rows count=%d reason=%s topic=%s partition=%d "
                    "offset=%d error=%s unlogged_before=%d totals=%s", len(dead), first.reason,
                    first.source.topic, first.source.partition, first.source.offset,
                    first.message, self._unlogged, self.counters.rejected)
        self._last_log, self._unlogged = now, 0


def _own_message(table: str, item: bytes | Row | IntakeItem) -> RawMessage:
    """A stand-in source for a row no input message made: the row's own bytes.

    Its offset is a digest of those bytes, so distinct rows keep distinct dead letters
    (the table is keyed on topic, partition, offset) and a replayed one collapses.
    """
    if isinstance(item, bytes):
        payload = item
    else:
        try:
            payload = _encoder.encode(item)
        except (TypeError, msgspec.EncodeError):
            payload = repr(item).encode()
    digest = int.from_bytes(hashlib.blake2b(payload, digest_size=7).digest(), "big")
    return RawMessage(topic=OWN_TOPIC_PREFIX + table, partition=-1, offset=digest, key=None,
                      value=payload)
