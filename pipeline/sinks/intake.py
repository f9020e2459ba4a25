"""The intake: the fast path of the two high-volume records into the store.

A node's sample batch (8 GPUs) and a node's step batch (its ranks of one job) are the
records that arrive at cluster scale: 10,000 nodes at 1 Hz are 10,000 of each per second.
Flattening them into one Python dict per GPU or rank cost more than everything else the
worker does, so ingest only sets each validated record aside as an :data:`IntakeItem`
``(record, Kafka partition, Kafka offset)`` under its intake name (:data:`INTAKE_TABLES`),
and the store thread turns a whole batch of them into columns at once
(:func:`intake_tables`, :mod:`trainguard.pipeline.sinks.columns`): the same tables and
values :func:`trainguard.pipeline.sinks.rows.rows_for` describes, inserted as Arrow.

What is stored is the decoded record, not the bytes as received: no unknown fields,
duplicate keys or odd whitespace that the store could read differently, so what was
validated is exactly what is stored.

A record with a time the store's columns cannot hold is no intake item: it takes the row
path, where :class:`~trainguard.pipeline.sinks.store_sink.StoreSink` dead-letters the rows
out of range (reason ``clock``) and stores the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from trainguard.pipeline.sinks.columns import IntakeItem, sample_tables, step_tables
from trainguard.pipeline.sinks.times import record_times_storable
from trainguard.schemas.records import GpuSampleBatch, Record, StepBatch

__all__ = ["INTAKE_TABLES", "IntakeItem", "intake_item", "intake_tables"]

#: Record type → its intake name: the ``(table, index)`` a refused record is known by.
INTAKE_TABLES: dict[type, str] = {GpuSampleBatch: "sample_batches_in", StepBatch: "step_batches_in"}

_BUILDERS = {"sample_batches_in": sample_tables, "step_batches_in": step_tables}


def intake_item(record: Record, partition: int = -1, offset: int = -1, *,
                storable: bool | None = None) -> tuple[str, IntakeItem] | None:
    """Return ``(intake name, item)`` for a high-volume record, else ``None``.

    ``None`` too for an intake record with a time out of the store's range (see above);
    ``storable`` is that verdict when the caller has already checked the record's times
    (:func:`~trainguard.pipeline.sinks.times.record_times_storable`, same answer).
    """
    table = INTAKE_TABLES.get(type(record))
    if table is None:
        return None
    if not (record_times_storable(record) if storable is None else storable):
        return None
    return table, (record, partition, offset)


def intake_tables(name: str, items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    """The stored tables' columns of intake ``items`` of intake ``name``.

    Raises :class:`~trainguard.pipeline.store.errors.StoreDataError` when a value does not
    fit its column, and KeyError for a name that is not an intake.
    """
    return _BUILDERS[name](items)
