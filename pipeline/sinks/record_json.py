"""Records into Arrow through their JSON: one C call to encode, C++ to read, no GIL held.

The store's path without numba (:mod:`~trainguard.pipeline.sinks.record_pack` reads the
same records at half the CPU when numba is installed), and the one for rank events.

Building Arrow columns from decoded records in Python (an attribute, tuple or list
element per value) holds the GIL for every value, and the store thread that does it
shares the GIL with the event loop. Here a whole batch of records is encoded by msgspec
in one call (newline-delimited JSON, ~1 ns per byte) and parsed by Arrow's JSON reader
(:func:`pyarrow.json.read_json`, C++, which runs without the GIL) against an explicit
schema: the fields a table stores, typed; every other field (``kind`` tags, fields no
table keeps) is skipped. What remains in Python is a few dozen Arrow calls per batch.

The values are the records' own: msgspec writes each float as its shortest round-trip
text, which the reader parses back to the same double; a float32 column is read as
float64 and cast (:data:`READ_F32`), exactly as ``pyarrow.array(floats, float32())``
narrows a Python float. Integers are checked against their column type by the reader (a
negative, too large or fractional value raises :class:`pyarrow.ArrowInvalid`). Only a
record built in-process could hold a NaN or an infinity (JSON cannot carry one, so no
decoded record does): it would read as null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

__all__ = ["READ_F32", "empty_maps", "flat_fields", "list_column", "read_records"]

#: The type a float32 column is read as (then cast): see the module's docstring.
READ_F32 = pa.float64()


def read_records(records: Sequence[Any], schema: pa.Schema) -> pa.Table:
    """The ``schema`` fields of ``records`` as one-chunk columns.

    A field missing from a record reads as null. Raises :class:`pyarrow.ArrowInvalid`
    for a value its type cannot hold.
    """
    body = msgspec.json.Encoder().encode_lines(records)
    # One block: a record never straddles blocks, whatever its size, and the calling
    # thread parses it (without the GIL) instead of handing it to Arrow's pool.
    table = pa_json.read_json(
        pa.BufferReader(body),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1),
        parse_options=pa_json.ParseOptions(explicit_schema=schema,
                                           unexpected_field_behavior="ignore"),
    )
    return table


def flat_fields(lists: pa.ListArray) -> tuple[pa.Array, dict[str, pa.Array]]:
    """The struct elements of ``lists`` flattened: each one's row in ``lists``, its fields."""
    owner = pc.list_parent_indices(lists)
    elements = lists.flatten()
    names = [field.name for field in elements.type]
    return owner, dict(zip(names, elements.flatten(), strict=True))


def list_column(lists: pa.ListArray, field: str | None = None,
                fill: Any = None) -> pa.ListArray:
    """An ``Array(T)`` column of ``lists``: a missing list is empty, not null.

    ``field`` picks one field of struct elements (``xid`` of each XID event), and
    ``fill`` replaces a null element.
    """
    lengths = lists.value_lengths().fill_null(0).to_numpy()
    offsets = pa.array(np.concatenate(([0], np.cumsum(lengths, dtype=np.int32))),
                       pa.int32())
    values = lists.flatten()
    if field is not None:
        values = pc.struct_field(values, field)
    if fill is not None:
        values = values.fill_null(fill)
    return pa.ListArray.from_arrays(offsets, values)


def empty_maps(rows: int, key: pa.DataType, item: pa.DataType) -> pa.MapArray:
    """A ``Map(key, item)`` column of ``rows`` empty maps."""
    return pa.MapArray.from_arrays(pa.array(np.zeros(rows + 1, np.int32)),
                                   pa.array([], key), pa.array([], item))
