"""Compact, compressed encoding of the detector-state snapshots (lossless, bounded to load).

A snapshot is a nested dict whose leaves are numpy arrays, strings or numbers (see
:func:`trainguard.pipeline.state.encode_arrays`, the old, uncompressed format). Here:

* the arrays' bytes are laid out one after another behind a small msgpack header that
  names each array's dtype, shape and length (no msgpack copy of the large bytes);
* the bytes of each multi-byte array are shuffled (byte 0 of every element, then byte 1,
  ..., as Blosc does): the exponent bytes of floats, the high bytes of small ints, line
  up and compress well;
* the whole is one zstd frame (level 1, with a checksum), so a damaged blob is refused.

:func:`pack_arrays` is meant to run off the event loop (zstd and numpy's copies release
the GIL) on arrays the loop copied out of the live state. :func:`unpack_arrays` reads
this format and, without its magic bytes, the old one; it never inflates past a bound
(a zip bomb costs its partition's state, not the worker's memory).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import zstandard

from trainguard.errors import TrainguardError

__all__ = ["MAGIC", "SnapshotError", "fold_rows", "pack_arrays", "unfold_rows", "unpack_arrays"]

#: A packed snapshot starts with this (an old one is a msgpack map: 0x8_ or 0xde/0xdf).
MAGIC = b"TGA\x01"
_LEVEL = 1
_ARRAY = "__a__"  # a header leaf: [dtype, shape, shuffled]
_STR = "__str__"  # a text array's leaf: its strings (as the old format wrote them)
_KINDS = "biuf"  # bool, ints, floats: nothing that would need Python objects


class SnapshotError(TrainguardError):
    """A snapshot blob that cannot be unpacked (damaged, hostile, over its bound)."""


def pack_arrays(doc: dict[str, Any]) -> bytes:
    """``doc`` as :data:`MAGIC` + one zstd frame of a header and the arrays' bytes."""
    buffers: list[Any] = []

    def enc(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            arr = value if value.flags.c_contiguous else value.copy(order="C")
            if arr.dtype.kind == "U":
                return {_STR: [str(x) for x in arr.tolist()]}
            if arr.dtype.kind not in _KINDS:
                raise SnapshotError(f"cannot pack a {arr.dtype} array; expected bool, int "
                                    "or float")
            shuffled = arr.dtype.itemsize > 1 and arr.size > 0
            buffers.append(_shuffle(arr) if shuffled else arr.reshape(-1).view(np.uint8))
            return {_ARRAY: [arr.dtype.str, list(arr.shape), shuffled]}
        if isinstance(value, dict):
            if _ARRAY in value or _STR in value:  # it would read back as an array
                raise SnapshotError(f"cannot pack a dict with key {_ARRAY!r} or {_STR!r}: "
                                    "the format marks arrays with them")
            return {k: enc(v) for k, v in value.items()}
        return value

    header = msgspec.msgpack.encode(enc(doc))
    compressor = zstandard.ZstdCompressor(level=_LEVEL, write_checksum=True)
    size = 4 + len(header) + sum(b.nbytes for b in buffers)
    stream = compressor.compressobj(size=size)
    parts = [MAGIC, stream.compress(len(header).to_bytes(4, "little") + header)]
    parts += [stream.compress(memoryview(b)) for b in buffers]
    parts.append(stream.flush())
    return b"".join(parts)


def unpack_arrays(blob: bytes, max_bytes: int) -> dict[str, Any]:
    """Inverse of :func:`pack_arrays`; a blob without :data:`MAGIC` is the old format.

    Raises :class:`SnapshotError` for a blob that is damaged, inflates past
    ``max_bytes`` or does not describe its arrays consistently.
    """
    if not blob.startswith(MAGIC):
        from trainguard.pipeline.state import decode_arrays

        return decode_arrays(blob)  # not compressed: bounded by its own size
    raw = memoryview(_inflate(blob[len(MAGIC):], max_bytes))
    if len(raw) < 4:
        raise SnapshotError("snapshot too short for its header")
    end = 4 + int.from_bytes(raw[:4], "little")
    try:
        header = msgspec.msgpack.decode(raw[4:end])
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"snapshot header does not decode: {exc}") from exc
    offset = [end]

    def dec(value: Any) -> Any:
        if isinstance(value, dict):
            if _ARRAY in value:
                return _array(raw, offset, value[_ARRAY])
            if _STR in value:
                return np.array(value[_STR], dtype=np.str_)
            return {k: dec(v) for k, v in value.items()}
        return value

    doc = dec(header)
    if offset[0] != len(raw) or not isinstance(doc, dict):
        raise SnapshotError(f"snapshot holds {len(raw) - offset[0]} bytes its header "
                            "does not name")
    return doc


def fold_rows(doc: dict[str, Any], key: str, like: str) -> dict[str, Any]:
    """``doc`` with the rows of ``doc[key]`` bitwise equal to ``doc[like]``'s left out.

    What is left: ``key + ".same"`` (a bit per row, packed) and ``key + ".rest"`` (the
    other rows, in order). :func:`unfold_rows` restores ``doc[key]`` exactly. A bank's
    ``recent`` window equals its ``window`` on every row that never held an alarm.
    """
    value, ref = doc.get(key), doc.get(like)
    if not isinstance(value, np.ndarray) or not isinstance(ref, np.ndarray) or (
            value.shape != ref.shape or value.dtype != ref.dtype or value.ndim != 2):
        return doc
    # Compared as unsigned ints of the same width: bit for bit (NaN payloads, -0.0).
    bits = np.dtype(f"u{value.dtype.itemsize}") if value.dtype.itemsize in (1, 2, 4, 8) \
        else np.dtype(np.uint8)
    a = np.ascontiguousarray(value).view(bits)
    same = (a == np.ascontiguousarray(ref).view(bits)).all(axis=1)
    out = {k: v for k, v in doc.items() if k != key}
    out[key + ".same"] = np.packbits(same)
    out[key + ".rest"] = value[~same]
    return out


def unfold_rows(doc: dict[str, Any], key: str, like: str) -> dict[str, Any]:
    """Inverse of :func:`fold_rows` (a ``doc`` without the folded keys is returned as is)."""
    if key + ".same" not in doc:
        return doc
    ref, packed, rest = doc[like], doc[key + ".same"], doc[key + ".rest"]
    if not all(isinstance(v, np.ndarray) for v in (ref, packed, rest)) or ref.ndim != 2:
        raise SnapshotError(f"folded {key!r} lacks its arrays")
    if packed.dtype != np.uint8 or len(packed) != -(-len(ref) // 8):
        raise SnapshotError(f"folded {key!r}: {len(packed)} mask bytes for {len(ref)} rows")
    same = np.unpackbits(packed, count=len(ref)).astype(bool)
    if rest.dtype != ref.dtype or rest.shape != (int((~same).sum()), *ref.shape[1:]):
        raise SnapshotError(f"folded {key!r}: {list(rest.shape)} rows of {rest.dtype} do "
                            f"not fit {int((~same).sum())} differing rows of {ref.dtype}")
    value = ref.copy()
    value[~same] = rest
    out = {k: v for k, v in doc.items() if k not in (key + ".same", key + ".rest")}
    out[key] = value
    return out


def _shuffle(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Byte ``k`` of every element together, for each ``k`` (a contiguous copy)."""
    flat = arr.reshape(-1).view(np.uint8).reshape(arr.size, arr.dtype.itemsize)
    return np.ascontiguousarray(flat.T)


def _array(raw: memoryview, offset: list[int], leaf: Any) -> np.ndarray[Any, Any]:
    try:
        dtype_str, shape, shuffled = leaf
        dtype = np.dtype(dtype_str)
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"snapshot array header {leaf!r} is not [dtype, shape, "
                            "shuffled]") from exc
    if dtype.kind not in _KINDS or any(n < 0 for n in shape):
        raise SnapshotError(f"snapshot array of {dtype} {list(shape)} refused")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    start = offset[0]
    if nbytes > len(raw) - start:
        raise SnapshotError(f"snapshot array of {nbytes} bytes overruns the blob")
    offset[0] = start + nbytes
    data = np.frombuffer(raw[start:start + nbytes], dtype=np.uint8)
    if shuffled is True and dtype.itemsize > 1:
        data = data.reshape(dtype.itemsize, count).T
    return data.copy().view(dtype).reshape(shape)  # .copy(): C order, owns its memory


def _inflate(data: bytes, bound: int) -> bytearray:
    """The zstd frame in ``data``, refused once it would inflate past ``bound`` bytes."""
    try:
        declared = zstandard.frame_content_size(data)
        if declared > bound:
            raise SnapshotError(f"snapshot inflates to {declared} bytes, over {bound}")
        reader = zstandard.ZstdDecompressor().stream_reader(data)
        out = bytearray()
        while len(out) <= bound:
            piece = reader.read(min(bound + 1 - len(out), 1 << 26))
            if not piece:
                break
            out += piece
    except zstandard.ZstdError as exc:
        raise SnapshotError(f"snapshot does not decompress: {exc}") from exc
    if len(out) > bound:
        raise SnapshotError(f"snapshot inflates past {bound} bytes")
    if declared >= 0 and len(out) != declared:
        raise SnapshotError(f"snapshot truncated: {len(out)} of {declared} bytes")
    return out
