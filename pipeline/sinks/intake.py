"""Intake lines: the fast path of the two high-volume records into the store.

A node's sample batch (8 GPUs) and a node's step batch (its ranks of one job) are the
records that arrive at cluster scale: 10,000 nodes at 1 Hz are 10,000 of each per second.
Flattening them into one Python dict per GPU or rank and JSON-encoding those dicts cost
more than everything else the worker does, so instead the worker hands each validated
record to ClickHouse as one JSON line, and the store's intake tables (``*_in``, Null
engine, ``schemas/sql/009_intake_tables.sql``) flatten it natively through materialized
views into the same tables and columns :func:`trainguard.pipeline.sinks.rows.rows_for` describes.

The line is the record re-encoded by msgspec, not the bytes as received: canonical JSON
has no unknown fields, duplicate keys or odd whitespace that ClickHouse's parser could
read differently from msgspec's, so what was validated is exactly what is stored. The
Kafka partition and offset are prepended as the ``_tg_partition``/``_tg_offset`` fields.

A record with a time the store's columns cannot hold gets no line: it takes the row path,
where :class:`~trainguard.pipeline.sinks.store_sink.StoreSink` dead-letters the rows out
of range (reason ``clock``) and stores the rest.
"""

from __future__ import annotations

import msgspec

from trainguard.pipeline.sinks.times import record_times_storable
from trainguard.schemas.records import GpuSampleBatch, Record, StepBatch

__all__ = ["INTAKE_TABLES", "intake_line"]

#: Record type → its intake table, and the tables each intake table fills.
INTAKE_TABLES: dict[type, str] = {GpuSampleBatch: "sample_batches_in", StepBatch: "step_batches_in"}

_encoder = msgspec.json.Encoder()


def intake_line(record: Record, partition: int = -1, offset: int = -1, *,
                storable: bool | None = None) -> tuple[str, bytes] | None:
    """Return ``(intake table, JSON line)`` for a high-volume record, else ``None``.

    ``None`` too for an intake record with a time out of the store's range (see above);
    ``storable`` is that verdict when the caller has already checked the record's times
    (:func:`~trainguard.pipeline.sinks.times.record_times_storable`, same answer).
    """
    table = INTAKE_TABLES.get(type(record))
    if table is None:
        return None
    if not (record_times_storable(record) if storable is None else storable):
        return None
    body = _encoder.encode(record)  # always starts with '{"kind":' for a tagged Struct
    return table, b'{"_tg_partition":%d,"_tg_offset":%d,%s' % (partition, offset, body[1:])
