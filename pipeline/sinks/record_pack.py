"""Records into columns through msgpack: one C call to encode, one compiled pass to read.

The store thread turns a batch of validated records into Arrow columns. Python code that
reads each value holds the GIL the event loop needs, and Arrow's JSON reader (the path
without numba, :mod:`~trainguard.pipeline.sinks.record_json`) spends ~25 µs per node
message parsing text back into numbers. Here msgspec encodes the whole batch as msgpack in
one call (floats as their 8 bytes: nothing to format or parse), and a numba kernel that
holds no GIL walks the bytes once, noting for every field of every record, and of every
element of one list field (a batch's GPUs or ranks), its msgpack type and value, or where
its text lies. numpy and Arrow then make each column from those notes in a few calls.

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

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from trainguard.pipeline.jit import AVAILABLE, jit, jit_leaf

__all__ = ["AVAILABLE", "PackSpec", "Unpacked", "read_packed", "unpack_records"]

# What the kernel notes per field: its msgpack type.
_MISSING, _NIL, _BOOL, _UINT, _BIG, _NEG, _FLOAT, _STR, _ARRAY, _MAP, _OTHER, _SINGLE = range(12)
_INTS = (_UINT, _BIG, _NEG)
_NUMBERS = (_FLOAT, _SINGLE, *_INTS)
_ENCODER = msgspec.msgpack.Encoder()
#: ``np.int64`` for the kernel (numba types with it), an ``int`` to mypy.
_i64: Any = np.int64


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
    return read_packed(_ENCODER.encode(records), len(records), elements, spec)


def read_packed(body: bytes, records: int, elements: int, spec: PackSpec) -> Unpacked:
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
    seen = _unpack(data, *_names(top), top.index(spec.items), *_names(element),
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
    return np.where((kind == _ARRAY) | (kind == _MAP), length, 0)


def _kinds(*kinds: int) -> np.ndarray:
    """A lookup table: True at each of ``kinds``."""
    table = np.zeros(256, bool)
    table[list(kinds)] = True
    return table


# Which notes each column type takes (missing and nil are null), and which are its values.
_LISTS = _kinds(_MISSING, _NIL, _ARRAY, _MAP)
_TEXTS = _kinds(_MISSING, _NIL, _STR)
_BOOLS = _kinds(_MISSING, _NIL, _BOOL)
_FLOATS, _FLOAT_VALUES = _kinds(_MISSING, _NIL, *_NUMBERS), _kinds(*_NUMBERS)
_UNSIGNED = _kinds(_MISSING, _NIL, _UINT, _BIG)
_SIGNED = _kinds(_MISSING, _NIL, _UINT, _NEG)
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
        valid = kind == _STR
        offsets, data = _gather(body, val.view(np.int64), length, valid)
        return pa.Array.from_buffers(typ, len(kind), [_validity(valid), pa.py_buffer(offsets),
                                                      pa.py_buffer(data)])
    if pa.types.is_boolean(typ):
        _allow(kind, _BOOLS, typ)
        return pa.array(val != 0, typ, mask=kind != _BOOL)
    if pa.types.is_floating(typ):
        _allow(kind, _FLOATS, typ)
        floats = kind == _FLOAT
        if floats.all():
            values = val.view(np.float64)
        else:
            values = np.where(kind == _NEG, val.view(np.int64), val).astype(np.float64)
            values[floats] = val.view(np.float64)[floats]
            single = kind == _SINGLE
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


def _validity(valid: np.ndarray) -> pa.Buffer | None:
    """Arrow's validity bitmap of ``valid`` (``None``: all valid)."""
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


@jit
def _gather(body: np.ndarray, start: np.ndarray, length: np.ndarray,
            valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The texts at ``body[start:start+length]`` end to end, with Arrow's int32 offsets."""
    n = len(start)
    offsets = np.zeros(n + 1, np.int32)
    total = 0
    for r in range(n):
        if valid[r]:
            total += length[r]
        if total > 2**31 - 1:
            raise ValueError("texts of one column over 2 GiB")
        offsets[r + 1] = total
    data = np.empty(total, np.uint8)
    for r in range(n):
        a = start[r]
        for k in range(offsets[r], offsets[r + 1]):  # a loop: a slice would count references
            data[k] = body[a]
            a += 1
    return offsets, data


@jit_leaf
def _be(b: np.ndarray, i: int, n: int) -> np.uint64:  # pragma: no cover - compiled
    """The big-endian unsigned integer of ``b[i:i+n]``."""
    if i + n > len(b):
        raise ValueError("msgpack ends inside a value")
    v = np.uint64(0)
    for k in range(n):
        v = (v << np.uint64(8)) | np.uint64(b[i + k])
    return v


# The kernel's functions return one integer each (where they stopped), write what they read
# into arrays and allocate nothing (``jit_leaf``): numba calls that count references of the
# arrays they pass, or return tuples, cost several times the parse itself.


@jit_leaf
def _count(b: np.ndarray, i: int, kinds: np.ndarray) -> int:  # pragma: no cover - compiled
    """The item count of the list (``kinds[0] == _ARRAY``) or map at ``i``; -1 otherwise.

    ``kinds[1]`` is set to where its first item lies.
    """
    if i >= len(b):
        raise ValueError("msgpack ends before its last object")
    t = b[i]
    if 0x80 <= t <= 0x9F:
        kinds[0], kinds[1] = (_MAP if t <= 0x8F else _ARRAY), i + 1
        return _i64(t & 0x0F)
    if 0xDC <= t <= 0xDF:
        n = 2 if t == 0xDC or t == 0xDE else 4
        kinds[0], kinds[1] = (_ARRAY if t <= 0xDD else _MAP), i + 1 + n
        return _i64(_be(b, i + 1, n))
    kinds[0] = _OTHER
    return -1


@jit_leaf
def _value(b: np.ndarray, i: int, kind: np.ndarray, val: np.ndarray, length: np.ndarray,
           row: int, slot: int) -> int:  # pragma: no cover - compiled
    """Note the msgpack object at ``i`` in ``[row, slot]``; return where it ends.

    The value of a text is where it starts (``length``: its size); a list or map is noted
    with its item count as ``length`` and skipped. A negative integer's value is its
    two's complement, a float's its IEEE bits (a float32's 4 bytes).
    """
    if i >= len(b):
        raise ValueError("msgpack ends before its last object")
    t = b[i]
    if t <= 0x7F:
        kind[row, slot], val[row, slot] = _UINT, t
        return i + 1
    if t == 0xCB:
        kind[row, slot], val[row, slot] = _FLOAT, _be(b, i + 1, 8)
        return i + 9
    if 0xA0 <= t <= 0xBF:
        n = _i64(t & 0x1F)
        kind[row, slot], val[row, slot], length[row, slot] = _STR, i + 1, n
        return i + 1 + n
    if t == 0xC0:
        kind[row, slot] = _NIL
        return i + 1
    if t == 0xC2 or t == 0xC3:
        kind[row, slot], val[row, slot] = _BOOL, t - 0xC2
        return i + 1
    if 0xCC <= t <= 0xCF:
        n = _i64(1) << (t - 0xCC)
        v = _be(b, i + 1, n)
        kind[row, slot], val[row, slot] = (_BIG if v >> np.uint64(63) else _UINT), v
        return i + 1 + n
    if t >= 0xE0 or 0xD0 <= t <= 0xD3:
        n = 0 if t >= 0xE0 else _i64(1) << (t - 0xD0)
        raw = np.uint64(t) if n == 0 else _be(b, i + 1, n)
        shift = np.uint64(64 - 8 * (1 if n == 0 else n))
        signed = _i64(raw << shift) >> _i64(shift)  # sign-extend
        kind[row, slot], val[row, slot] = (_NEG if signed < 0 else _UINT), np.uint64(signed)
        return i + 1 + n
    if 0xD9 <= t <= 0xDB:
        n = _i64(1) << (t - 0xD9)
        size = _i64(_be(b, i + 1, n))
        kind[row, slot], val[row, slot], length[row, slot] = _STR, i + 1 + n, size
        return i + 1 + n + size
    if t == 0xCA:  # widened by _column: an allocation here would slow every call
        kind[row, slot], val[row, slot] = _SINGLE, _be(b, i + 1, 4)
        return i + 5
    if 0x80 <= t <= 0x9F or 0xDC <= t <= 0xDF:
        kind[row, slot] = _ARRAY if 0x90 <= t <= 0x9F or t == 0xDC or t == 0xDD else _MAP
        length[row, slot] = _i64(t & 0x0F) if t <= 0x9F else _i64(
            _be(b, i + 1, 2 if t == 0xDC or t == 0xDE else 4))
    else:
        kind[row, slot] = _OTHER
    return _skip(b, i)


@jit_leaf
def _skip(b: np.ndarray, i: int) -> int:  # pragma: no cover - compiled
    """Where the msgpack object at ``i`` ends, lists and maps with all they hold."""
    left = 1
    while left > 0:
        if i >= len(b):
            raise ValueError("msgpack ends before its last object")
        t = b[i]
        left -= 1
        if t <= 0x7F or t >= 0xE0 or t == 0xC0 or t == 0xC2 or t == 0xC3:
            i += 1
        elif t <= 0x8F:
            left += 2 * _i64(t & 0x0F)
            i += 1
        elif t <= 0x9F:
            left += _i64(t & 0x0F)
            i += 1
        elif t <= 0xBF:
            i += 1 + _i64(t & 0x1F)
        elif t == 0xCB or t == 0xCF or t == 0xD3:
            i += 9
        elif t == 0xCA or t == 0xCE or t == 0xD2:
            i += 5
        elif t == 0xCC or t == 0xD0:
            i += 2
        elif t == 0xCD or t == 0xD1:
            i += 3
        elif 0xD9 <= t <= 0xDB or 0xC4 <= t <= 0xC6:  # str, bin 8/16/32
            n = _i64(1) << ((t - 0xD9) if t >= 0xD9 else (t - 0xC4))
            i += 1 + n + _i64(_be(b, i + 1, n))
        elif 0xDC <= t <= 0xDF:
            n = 2 if t == 0xDC or t == 0xDE else 4
            items = _i64(_be(b, i + 1, n))
            left += items if t <= 0xDD else 2 * items
            i += 1 + n
        elif 0xC7 <= t <= 0xC9:  # ext 8/16/32: size, type byte, data
            n = _i64(1) << (t - 0xC7)
            i += 2 + n + _i64(_be(b, i + 1, n))
        elif 0xD4 <= t <= 0xD8:  # fixext 1..16: type byte, data
            i += 2 + (_i64(1) << (t - 0xD4))
        else:
            raise ValueError("not a msgpack type byte")
    return i


@jit_leaf
def _find(b: np.ndarray, i: int, names: np.ndarray, offsets: np.ndarray,
          hint: int) -> int:  # pragma: no cover - compiled
    """The slot of the text key at ``i``, -1 for another key; tried from ``hint`` on."""
    if i + 1 >= len(b):
        raise ValueError("msgpack ends before its last object")
    t = b[i]
    if 0xA0 <= t <= 0xBF:
        start, size = i + 1, _i64(t & 0x1F)
    elif t == 0xD9:
        start, size = i + 2, _i64(b[i + 1])
    else:
        raise ValueError("a key is not a short text")
    if start + size > len(b):
        raise ValueError("msgpack ends inside a key")
    n = len(offsets) - 1
    for k in range(n):
        j = hint + k
        if j >= n:
            j -= n
        a = offsets[j]
        if offsets[j + 1] - a != size:
            continue
        same = True
        for c in range(size):
            if names[a + c] != b[start + c]:
                same = False
                break
        if same:
            return j
    return -1


@jit_leaf
def _key_end(b: np.ndarray, i: int) -> int:  # pragma: no cover - compiled
    """Where the text key at ``i`` (checked by ``_find``) ends."""
    t = b[i]
    return i + 1 + _i64(t & 0x1F) if t <= 0xBF else i + 2 + _i64(b[i + 1])


@jit_leaf
def _fields(b: np.ndarray, i: int, names: np.ndarray, offsets: np.ndarray, row: int,
            kind: np.ndarray, val: np.ndarray, length: np.ndarray,
            at: np.ndarray) -> int:  # pragma: no cover - compiled
    """Note the named fields of the map at ``i`` in ``row``; return where the map ends."""
    count = _count(b, i, at)
    if at[0] != _MAP:
        raise ValueError("a record or element is not a map")
    i = at[1]
    hint = 0
    for _ in range(count):
        slot = _find(b, i, names, offsets, hint)
        i = _key_end(b, i)
        if slot < 0:
            i = _skip(b, i)
        else:
            hint = slot + 1  # msgspec writes a Struct's fields in order
            i = _value(b, i, kind, val, length, row, slot)
    return i


@jit_leaf
def _unpack(b: np.ndarray, top: np.ndarray, top_offsets: np.ndarray, items: int,
            element: np.ndarray, element_offsets: np.ndarray, t_kind: np.ndarray,
            t_val: np.ndarray, t_len: np.ndarray, e_kind: np.ndarray, e_val: np.ndarray,
            e_len: np.ndarray, owner: np.ndarray,
            at: np.ndarray) -> int:  # pragma: no cover - compiled
    """Note a msgpack list of records, and the elements of each one's ``items`` list.

    Returns how many elements were noted; ``at`` is two integers of scratch. The record's
    key loop is ``_fields``'s, but reads the ``items`` list where it lies: skipping it and
    coming back would walk every element twice.
    """
    records = _count(b, 0, at)
    if at[0] != _ARRAY or records != t_kind.shape[0]:
        raise ValueError("not the list of records")
    i, e = at[1], 0
    for r in range(records):
        count = _count(b, i, at)
        if at[0] != _MAP:
            raise ValueError("a record is not a map")
        i = at[1]
        hint = 0
        for _ in range(count):
            slot = _find(b, i, top, top_offsets, hint)
            i = _key_end(b, i)
            if slot < 0:
                i = _skip(b, i)
                continue
            hint = slot + 1
            n = _count(b, i, at) if slot == items else -1
            if n < 0 or at[0] != _ARRAY:
                i = _value(b, i, t_kind, t_val, t_len, r, slot)
                continue
            t_kind[r, slot], t_len[r, slot] = _ARRAY, n
            i = at[1]
            for _ in range(n):
                if e >= len(owner):
                    raise ValueError("more elements than the records hold")
                owner[e] = r
                i = _fields(b, i, element, element_offsets, e, e_kind, e_val, e_len, at)
                e += 1
    if i != len(b):  # past it, a text the notes point to would lie outside the bytes
        raise ValueError("the records do not end where the msgpack does")
    return e
