"""Records into columns through msgpack: one C call to encode, one compiled pass to read.

The store thread turns a batch of validated records into Arrow columns. Python code that
reads each value holds the GIL the event loop needs, and Arrow's JSON reader (the path
without numba, :mod:`~trainguard.pipeline.sinks.record_json`) spends ~25 µs per node
message parsing text back into numbers. Here msgspec encodes the whole batch as msgpack in
one call (floats as their 8 bytes: nothing to format or parse), and a numba kernel that
holds no GIL (:mod:`~trainguard.pipeline.sinks.msgpack_notes`) walks the bytes once,
noting for every field of every record, and of every element of one list field (a batch's
GPUs or ranks), its msgpack type and value, or where its text lies. Float and unsigned
columns are then made from those notes by one more compiled pass each
(:mod:`~trainguard.pipeline.sinks.note_columns`), the others by numpy and Arrow in a few
calls. The batch is encoded into a buffer the thread keeps, not a new one each time.

This reads only msgspec's own encoding of records the worker has validated, never bytes
off the wire, so what is stored is still what was validated. The columns are those
Arrow's JSON reader gives for the same records and schema (the tests hold both to the
reference builder): a missing or null field is null, a NaN or infinity (only a record
built in-process can hold one) is null as JSON would carry it, and a value its column
type cannot hold raises (:class:`ValueError` or :class:`pyarrow.ArrowInvalid`). Fields
not named are skipped; list fields inside an element are only counted (their few values
are read off the records by the caller).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from trainguard.pipeline.jit import AVAILABLE
from trainguard.pipeline.sinks.msgpack_notes import (
    ARRAY,
    BIG,
    BOOL,
    FLOAT,
    MAP,
    MISSING,
    NEG,
    NIL,
    SINGLE,
    STR,
    UINT,
    gather,
    unpack,
)
from trainguard.pipeline.sinks.note_columns import OTHER_PATH, float_values, uint_values

__all__ = ["AVAILABLE", "PackSpec", "Unpacked", "read_packed", "unpack_records"]

_INTS = (UINT, BIG, NEG)
_NUMBERS = (FLOAT, SINGLE, *_INTS)
_ENCODER = msgspec.msgpack.Encoder()
#: A thread keeps its encode buffer up to this size (a 16,000-message batch: ~35 MiB).
KEEP_BUFFER = 64 << 20
_local = threading.local()


@dataclass(frozen=True)
class PackSpec:
    """Which fields to read: the records' own, and those of the elements of ``items``.

    ``top`` and ``element`` are scalar fields with their Arrow type; ``counted`` and
    ``element_counted`` are list or map fields whose lengths only are wanted.
    """

    top: tuple[tuple[str, pa.DataType], ...]
    items: str
    element: tuple[tuple[str, pa.DataType], ...]
    counted: tuple[str, ...] = ()
    element_counted: tuple[str, ...] = ()

    def names(self) -> tuple[list[str], list[str]]:
        """Field names of a record and of an element, in slot order."""
        return ([name for name, _ in self.top] + [self.items, *self.counted],
                [name for name, _ in self.element] + list(self.element_counted))


@dataclass
class Unpacked:
    """A batch's columns: per record (``head``, ``lengths``) and per element."""

    head: dict[str, pa.Array]
    #: Per record: the length of ``items`` and of each counted list or map (0: missing).
    lengths: dict[str, np.ndarray]
    #: Per element: the index of its record.
    owner: np.ndarray
    fields: dict[str, pa.Array]
    element_lengths: dict[str, np.ndarray]


def unpack_records(records: Sequence[Any], spec: PackSpec) -> Unpacked:
    """The ``spec`` fields of ``records`` (msgspec Structs) as columns.

    Raises :class:`ValueError` or :class:`pyarrow.ArrowInvalid` for a value its type cannot
    hold, :class:`msgspec.EncodeError` or :class:`OverflowError` for one msgpack cannot.
    """
    elements = sum(map(len, map(attrgetter(spec.items), records)))
    body = _buffer()
    try:
        _ENCODER.encode_into(records, body)
    except BufferError:
        # A view of the last batch's bytes is still alive: the traceback of its error (a
        # value its column cannot hold), which the sink is bisecting. It keeps that buffer.
        body = _local.body = bytearray()
        _ENCODER.encode_into(records, body)
    try:
        return read_packed(body, len(records), elements, spec)
    finally:
        if len(body) > KEEP_BUFFER:
            _local.body = None  # a rare giant batch: give its memory back


def _buffer() -> bytearray:
    """The calling thread's encode buffer.

    ``read_packed``'s views of it end with its call, but for an error's traceback (see
    :func:`unpack_records`). Reused, it is written in place: a fresh ``bytes`` per batch
    costs its pages again each time (msgpack of 8,000 sample batches: 4.8 against 2.1 µs a
    record).
    """
    body: bytearray | None = getattr(_local, "body", None)
    if body is None:
        body = _local.body = bytearray()
    return body


def read_packed(body: bytes | bytearray, records: int, elements: int, spec: PackSpec) -> Unpacked:
    """The ``spec`` fields of ``body``: a msgpack list of ``records`` maps.

    Their ``items`` lists hold ``elements`` maps in all. Raises :class:`ValueError` for
    bytes that are not such a list (one the kernel cannot read to its end, a count that
    differs) or a value of the wrong type.
    """
    data = np.frombuffer(body, np.uint8)
    top, element = spec.names()
    t_kind, t_val, t_len = _notes(records, len(top))
    e_kind, e_val, e_len = _notes(elements, len(element))
    owner = np.zeros(elements, np.int64)
    seen = unpack(data, *_names(top), top.index(spec.items), *_names(element),
                   t_kind, t_val, t_len, e_kind, e_val, e_len, owner, np.zeros(2, np.int64))
    if seen != elements:
        raise ValueError(f"{seen} elements read where {elements} were counted")
    head = {name: _named(name, data, t_kind[:, j], t_val[:, j], t_len[:, j], typ)
            for j, (name, typ) in enumerate(spec.top)}
    fields = {name: _named(name, data, e_kind[:, j], e_val[:, j], e_len[:, j], typ)
              for j, (name, typ) in enumerate(spec.element)}
    lengths = {name: _lengths(t_kind[:, j], t_len[:, j], name)
               for j, name in enumerate(top) if j >= len(spec.top)}
    element_lengths = {name: _lengths(e_kind[:, j], e_len[:, j], name)
                       for j, name in enumerate(element) if j >= len(spec.element)}
    return Unpacked(head, lengths, owner, fields, element_lengths)


def _notes(rows: int, fields: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Column-major: each field's notes are one contiguous column.
    return (np.zeros((rows, fields), np.uint8, order="F"),
            np.zeros((rows, fields), np.uint64, order="F"),
            np.zeros((rows, fields), np.int64, order="F"))


def _names(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Field names as the kernel matches them: their UTF-8 bytes end to end, and offsets."""
    encoded = [name.encode() for name in names]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    return np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets


def _lengths(kind: np.ndarray, length: np.ndarray, name: str) -> np.ndarray:
    _allow(kind, _LISTS, name)
    return np.where((kind == ARRAY) | (kind == MAP), length, 0)


def _kinds(*kinds: int) -> np.ndarray:
    """A lookup table: True at each of ``kinds``."""
    table = np.zeros(256, bool)
    table[list(kinds)] = True
    return table


# Which notes each column type takes (missing and nil are null), and which are its values.
_LISTS = _kinds(MISSING, NIL, ARRAY, MAP)
_TEXTS = _kinds(MISSING, NIL, STR)
_BOOLS = _kinds(MISSING, NIL, BOOL)
_FLOATS, _FLOAT_VALUES = _kinds(MISSING, NIL, *_NUMBERS), _kinds(*_NUMBERS)
_UNSIGNED = _kinds(MISSING, NIL, UINT, BIG)
_SIGNED = _kinds(MISSING, NIL, UINT, NEG)
_INT_VALUES = _kinds(*_INTS)


def _allow(kind: np.ndarray, table: np.ndarray, what: object) -> None:
    ok = table[kind]
    if not ok.all():
        raise ValueError(f"{what}: a value of msgpack type {int(kind[~ok][0])} where "
                         f"types {np.flatnonzero(table).tolist()} are read")


def _named(name: str, body: np.ndarray, kind: np.ndarray, val: np.ndarray,
           length: np.ndarray, typ: pa.DataType) -> pa.Array:
    """``_column``, its error naming the field (Arrow's ``ArrowInvalid`` is a ValueError)."""
    try:
        return _column(body, kind, val, length, typ)
    except ValueError as exc:
        raise ValueError(f"field {name!r} ({typ}): {exc}") from None


def _column(body: np.ndarray, kind: np.ndarray, val: np.ndarray, length: np.ndarray,
            typ: pa.DataType) -> pa.Array:
    """One column of ``typ`` from its notes."""
    if pa.types.is_string(typ):
        _allow(kind, _TEXTS, typ)
        valid = kind == STR
        offsets, data = gather(body, val.view(np.int64), length, valid)
        return pa.Array.from_buffers(typ, len(kind), [_validity(valid), pa.py_buffer(offsets),
                                                      pa.py_buffer(data)])
    if pa.types.is_boolean(typ):
        _allow(kind, _BOOLS, typ)
        return pa.array(val != 0, typ, mask=kind != BOOL)
    fast = _compiled(kind, val, typ) if AVAILABLE else None
    if fast is not None:
        return fast
    if pa.types.is_floating(typ):
        _allow(kind, _FLOATS, typ)
        floats = kind == FLOAT
        if floats.all():
            values = val.view(np.float64)
        else:
            values = np.where(kind == NEG, val.view(np.int64), val).astype(np.float64)
            values[floats] = val.view(np.float64)[floats]
            single = kind == SINGLE
            values[single] = val[single].astype(np.uint32).view(np.float32)
        null = ~_FLOAT_VALUES[kind] | ~np.isfinite(values)
        return pa.array(values, pa.float64(), mask=null).cast(typ)
    if pa.types.is_unsigned_integer(typ):
        _allow(kind, _UNSIGNED, typ)
        return pa.array(val, pa.uint64(), mask=~_INT_VALUES[kind]).cast(typ)
    if pa.types.is_integer(typ):
        _allow(kind, _SIGNED, typ)
        return pa.array(val.view(np.int64), pa.int64(), mask=~_INT_VALUES[kind]).cast(typ)
    raise TypeError(f"no msgpack reading for Arrow type {typ}")


#: Unsigned column types the kernel fills: their numpy type and largest value.
_UINTS = {pa.uint8(): (np.uint8, 2**8 - 1), pa.uint16(): (np.uint16, 2**16 - 1),
          pa.uint32(): (np.uint32, 2**32 - 1), pa.uint64(): (np.uint64, 2**64 - 1)}


def _compiled(kind: np.ndarray, val: np.ndarray, typ: pa.DataType) -> pa.Array | None:
    """A float64 or unsigned column in one compiled pass; None: take the numpy path."""
    n = len(kind)
    valid = np.empty(n, np.bool_)
    if typ == pa.float64():
        out = np.empty(n, np.float64)
        nulls = float_values(kind, val, val.view(np.float64), out, valid)
    elif typ in _UINTS:
        dtype, top = _UINTS[typ]
        out = np.empty(n, dtype)
        nulls = uint_values(kind, val, np.uint64(top), out, valid)
    else:
        return None
    if nulls == OTHER_PATH:
        return None
    bitmap = None if nulls == 0 else _validity(valid)
    return pa.Array.from_buffers(typ, n, [bitmap, pa.py_buffer(out)], null_count=nulls)


def _validity(valid: np.ndarray) -> pa.Buffer | None:
    """Arrow's validity bitmap of ``valid`` (``None``: all valid)."""
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))
