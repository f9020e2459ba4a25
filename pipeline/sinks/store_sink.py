"""The store sink: one insert per table per batch, retried with backoff while the store is down.

At-least-once: the caller acknowledges (commits) the Kafka offsets of a batch only
after :meth:`StoreSink.write` returned, and every table is a ReplacingMergeTree keyed on
the record's identity, so a batch written twice (a retry, or a replay after a crash)
leaves one row. While the store is unreachable, ``write`` blocks and retries; the
worker stops consuming meanwhile (explicit backpressure, nothing dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from trainguard.errors import StoreError
from trainguard.pipeline.sinks.rows import Row
from trainguard.pipeline.store.base import Store

__all__ = ["SinkCounters", "StoreSink"]

log = logging.getLogger(__name__)


@dataclass
class SinkCounters:
    """What the sink did since start."""

    batches: int = 0
    rows: int = 0
    #: Intake lines (one per sample or step batch) written to the ``*_in`` tables.
    lines: int = 0
    retries: int = 0
    last_batch_s: float = 0.0


class StoreSink:
    """Writes row batches to a :class:`Store`, retrying transient failures."""

    def __init__(
        self,
        store: Store,
        *,
        retry_for_s: float = 600.0,
        max_backoff_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
    ) -> None:
        self._store = store
        self._retry_for_s = retry_for_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._clock = clock
        self._stop = stop or threading.Event()
        self.counters = SinkCounters()

    def write(
        self,
        rows: Mapping[str, Sequence[Row]],
        lines: Mapping[str, Sequence[bytes]] | None = None,
    ) -> int:
        """Insert every table's rows and intake lines; return how many went in.

        Raises StoreError when giving up.
        """
        started = self._clock()
        backoff = 0.2
        pending = {table: batch for table, batch in rows.items() if batch}
        pending_lines = {table: batch for table, batch in (lines or {}).items() if batch}
        while True:
            try:
                # A retry re-sends tables that already succeeded: harmless on idempotent tables,
                # and simpler than tracking partial success.
                for table, blines in pending_lines.items():
                    self._store.insert_json_lines(table, blines)
                for table, batch in pending.items():
                    self._store.insert_rows(table, batch)
                break
            except StoreError as exc:
                waited = self._clock() - started
                if waited >= self._retry_for_s or self._stop.is_set():
                    raise StoreError(
                        f"giving up on a store write after {waited:.0f}s and "
                        f"{self.counters.retries} retries: {exc}"
                    ) from exc
                self.counters.retries += 1
                log.warning(
                    "store write failed; retrying backoff_s=%.1f waited_s=%.0f error=%s",
                    backoff,
                    waited,
                    exc,
                )
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
        written = sum(len(b) for b in pending.values())
        n_lines = sum(len(b) for b in pending_lines.values())
        self.counters.batches += 1
        self.counters.rows += written
        self.counters.lines += n_lines
        self.counters.last_batch_s = self._clock() - started
        return written + n_lines
