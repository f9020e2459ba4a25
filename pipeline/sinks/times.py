"""The store's time range: a timestamp its ``DateTime64(3)`` columns cannot hold never reaches it.

ClickHouse does not refuse such a value: it clamps it (``ts = 1e308`` was stored as a
date thousands of years away), so a record with an absurd clock would be stored as a
lie, and a far-future one skews every query ordered by time. The sink checks every row
before the insert (:func:`row_time_error`) and dead-letters the ones out of range with
reason :data:`CLOCK_REASON`; the intake path checks the record
(:func:`record_times_storable`) and sends a record that fails to the row path, where the
same check rejects exactly its out-of-range rows. The event-time window of ingest is
much narrower; this is the backstop for every path into the store, derived rows too.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from trainguard.pipeline.sinks.rows import Row
from trainguard.schemas.records import Record, StepBatch

__all__ = [
    "CLOCK_REASON",
    "STORE_TS_MAX",
    "STORE_TS_MIN",
    "TIME_COLUMNS",
    "record_times_storable",
    "row_time_error",
]

#: Dead-letter reason of a record whose time cannot be right (shared with ingest's window).
CLOCK_REASON = "clock"
#: The range of ClickHouse ``DateTime64``: 1900-01-01 00:00:00 .. 2299-12-31 23:59:59.999 UTC.
STORE_TS_MIN = -2208988800.0
STORE_TS_MAX = 10413791999.999
#: Row keys stored in ``DateTime64`` columns (schemas/sql), in any table.
TIME_COLUMNS = (
    "ts", "first_seen", "last_seen", "cleared_at", "starts_at", "ends_at", "alert_ts",
    "created_at", "updated_at", "changed_at", "since",
)
_YEAR_MIN, _YEAR_MAX = 1900, 2299


def _storable(value: float) -> bool:
    return math.isfinite(value) and STORE_TS_MIN <= value <= STORE_TS_MAX


def row_time_error(table: str, row: Row) -> str | None:
    """Why ``row`` cannot be stored as it is (a time out of range), or None when it can."""
    for column in TIME_COLUMNS:
        value: Any = row.get(column)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            if _storable(float(value)):
                continue
        elif isinstance(value, datetime):
            if _YEAR_MIN <= value.year <= _YEAR_MAX:
                continue
        else:
            continue  # text is parsed by the store, which refuses what it cannot read
        return (f"{table}.{column}={value!r} is outside the store's time range "
                "1900-01-01..2299-12-31 UTC")
    return None


def record_times_storable(record: Record) -> bool:
    """True when every time an intake record stores fits the store's range."""
    if not _storable(record.ts):
        return False
    if isinstance(record, StepBatch):
        return all(_storable(step.ts) for step in record.steps) and all(
            _storable(e.ts) and (e.since is None or _storable(e.since)) for e in record.events)
    return True  # a sample batch's XID event times are not stored as DateTime64
