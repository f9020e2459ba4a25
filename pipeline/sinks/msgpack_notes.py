"""The numba kernel behind :mod:`~trainguard.pipeline.sinks.record_pack`: msgpack to notes.

:func:`unpack` walks a msgpack list of records once and notes, for each named field of
each record and of each element of one list field, its msgpack type (the constants
below), its value (an integer's bits, a float's IEEE bits, a text's start) and its length
(a text's size, a list's or map's item count). :func:`gather` copies the texts a column
names into Arrow's layout. Both hold no GIL, and every function raises ``ValueError``
instead of reading past the bytes it was given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainguard.pipeline.jit import jit, jit_leaf

__all__ = ["ARRAY", "BIG", "BOOL", "FLOAT", "MAP", "MISSING", "NEG", "NIL", "OTHER", "SINGLE",
           "STR", "UINT", "gather", "unpack"]

# What the kernel notes per field: its msgpack type (MISSING: the field was not there).
MISSING, NIL, BOOL, UINT, BIG, NEG, FLOAT, STR, ARRAY, MAP, OTHER, SINGLE = range(12)
#: ``np.int64`` for the kernel (numba types with it), an ``int`` to mypy.
_i64: Any = np.int64


@jit
def gather(body: np.ndarray, start: np.ndarray, length: np.ndarray,
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
        # Slices count references, yet beat a loop per byte from ~10 bytes a text on
        # (8,000 texts of 34 bytes: 143 against 243 µs; of 8 bytes: 73 against 69).
        a, o, m = start[r], offsets[r], offsets[r + 1] - offsets[r]
        data[o:o + m] = body[a:a + m]
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
    """The item count of the list (``kinds[0] == ARRAY``) or map at ``i``; -1 otherwise.

    ``kinds[1]`` is set to where its first item lies.
    """
    if i >= len(b):
        raise ValueError("msgpack ends before its last object")
    t = b[i]
    if 0x80 <= t <= 0x9F:
        kinds[0], kinds[1] = (MAP if t <= 0x8F else ARRAY), i + 1
        return _i64(t & 0x0F)
    if 0xDC <= t <= 0xDF:
        n = 2 if t == 0xDC or t == 0xDE else 4
        kinds[0], kinds[1] = (ARRAY if t <= 0xDD else MAP), i + 1 + n
        return _i64(_be(b, i + 1, n))
    kinds[0] = OTHER
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
        kind[row, slot], val[row, slot] = UINT, t
        return i + 1
    if t == 0xCB:
        kind[row, slot], val[row, slot] = FLOAT, _be(b, i + 1, 8)
        return i + 9
    if 0xA0 <= t <= 0xBF:
        n = _i64(t & 0x1F)
        kind[row, slot], val[row, slot], length[row, slot] = STR, i + 1, n
        return i + 1 + n
    if t == 0xC0:
        kind[row, slot] = NIL
        return i + 1
    if t == 0xC2 or t == 0xC3:
        kind[row, slot], val[row, slot] = BOOL, t - 0xC2
        return i + 1
    if 0xCC <= t <= 0xCF:
        n = _i64(1) << (t - 0xCC)
        v = _be(b, i + 1, n)
        kind[row, slot], val[row, slot] = (BIG if v >> np.uint64(63) else UINT), v
        return i + 1 + n
    if t >= 0xE0 or 0xD0 <= t <= 0xD3:
        n = 0 if t >= 0xE0 else _i64(1) << (t - 0xD0)
        raw = np.uint64(t) if n == 0 else _be(b, i + 1, n)
        shift = np.uint64(64 - 8 * (1 if n == 0 else n))
        signed = _i64(raw << shift) >> _i64(shift)  # sign-extend
        kind[row, slot], val[row, slot] = (NEG if signed < 0 else UINT), np.uint64(signed)
        return i + 1 + n
    if 0xD9 <= t <= 0xDB:
        n = _i64(1) << (t - 0xD9)
        size = _i64(_be(b, i + 1, n))
        kind[row, slot], val[row, slot], length[row, slot] = STR, i + 1 + n, size
        return i + 1 + n + size
    if t == 0xCA:  # widened by _column: an allocation here would slow every call
        kind[row, slot], val[row, slot] = SINGLE, _be(b, i + 1, 4)
        return i + 5
    if 0x80 <= t <= 0x9F or 0xDC <= t <= 0xDF:
        kind[row, slot] = ARRAY if 0x90 <= t <= 0x9F or t == 0xDC or t == 0xDD else MAP
        length[row, slot] = _i64(t & 0x0F) if t <= 0x9F else _i64(
            _be(b, i + 1, 2 if t == 0xDC or t == 0xDE else 4))
    else:
        kind[row, slot] = OTHER
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
    if at[0] != MAP:
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
def unpack(b: np.ndarray, top: np.ndarray, top_offsets: np.ndarray, items: int,
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
    if at[0] != ARRAY or records != t_kind.shape[0]:
        raise ValueError("not the list of records")
    i, e = at[1], 0
    for r in range(records):
        count = _count(b, i, at)
        if at[0] != MAP:
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
            if n < 0 or at[0] != ARRAY:
                i = _value(b, i, t_kind, t_val, t_len, r, slot)
                continue
            t_kind[r, slot], t_len[r, slot] = ARRAY, n
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
