"""Exact 64-bit digest of a model's parameters, computed on their device without a sync.

The parameters are read as one stream of 32-bit words in a fixed order (the tensors of at
least ``COLUMNS`` words in ``model.parameters()`` order, then the smaller ones concatenated
in that order), each tensor's bytes reinterpreted: 4- and 8-byte dtypes as ``int32``
words, 2-byte dtypes with an odd element count and 1-byte dtypes widened element by
element. Word ``p`` of
the stream, with value ``x_p``, contributes ``w_p * x_p`` and the digest is the sum mod 2^64
(int64 wraparound arithmetic, the same on every device) plus a constant derived from the
tensors' shapes and dtypes. The weights satisfy ``w_p ≡ 2p + 1 (mod 2^33)``; their upper
31 bits are pseudo-random. Hence, for a stream shorter than 2^32 words (16 GiB per rank):

- **any change of one word changes the digest**: the delta is ``w_p * d`` with ``w_p`` odd
  and ``0 < |d| < 2^32``, never 0 mod 2^64 (so every single-bit flip is caught);
- **two words changed by +d and -d, or swapped, change it**: the delta is
  ``(w_p - w_q) * d`` and ``w_p - w_q ≡ 2(p - q) (mod 2^33)`` has at most 32 factors of 2,
  ``d`` at most 31, so the product is not 0 mod 2^64 (a plain sum would not change);
- other multi-word changes cancel only by chance (the upper bits are pseudo-random).

It is not a cryptographic MAC: code that controls the training loop can forge anything;
the digest makes honest replicas comparable and accidental or naive tampering visible.

Cost: the words are viewed as a ``[rows, COLUMNS]`` matrix, widened to int64 a block of
rows at a time, and reduced twice (row sums and column sums), because
``w = a_c + b_r + chunk constant``: no materialised weights, ~7 bytes of memory traffic
per byte of parameters. Tensors smaller than a row are concatenated into one chunk to
save kernel launches. On the CPU (numpy) the views of the parameters' words are kept
between digests while the parameters keep their storage (a small model's digest: ~0.12 →
~0.05 ms).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import torch

__all__ = ["COLUMNS", "MASK64", "ParamChecksum", "column_weight", "reference_digest",
           "row_weight", "to_hex"]

#: Words per row of the matrix view (a power of two; a tensor smaller joins a chunk).
COLUMNS: Final = 1024
MASK64: Final = 2**64 - 1
_MASK31: Final = 2**31 - 1
# Small tensors are concatenated until a chunk holds this many words.
_CHUNK_WORDS: Final = COLUMNS * 256
# Large tensors are widened to int64 this many words at a time (128 MiB of scratch).
_BLOCK_WORDS: Final = 2**24


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fixed bijection of 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def column_weight(c: int) -> int:
    """``a_c = 2c + 1 + 2^33 * rand31(c)`` (mod 2^64, unsigned)."""
    return (2 * c + 1 + ((_mix(c) & _MASK31) << 33)) & MASK64


def row_weight(r: int, columns: int = COLUMNS) -> int:
    """``b_r = 2 * columns * r + 2^33 * rand31(r)`` (mod 2^64, unsigned)."""
    return (2 * columns * r + ((_mix(r ^ 0x5A5A5A5A5A5A) & _MASK31) << 33)) & MASK64


def chunk_weight(offset: int, index: int) -> int:
    """The constant every word of chunk ``index`` (starting at word ``offset``) adds."""
    return (2 * offset + ((_mix(index ^ 0xC3C3C3C3C3C3) & _MASK31) << 33)) & MASK64


def _signed(x: int) -> int:
    x &= MASK64
    return x - 2**64 if x >= 2**63 else x


def to_hex(value: int) -> str:
    """The digest as 16 lowercase hex digits (what ``param_checksum`` carries)."""
    return f"{value & MASK64:016x}"


def reference_digest(chunks: Sequence[Sequence[int]], signature: int = 0,
                     columns: int = COLUMNS) -> int:
    """The digest in pure Python over chunks of (signed 32-bit) words: the specification."""
    total, offset = signature, 0
    for index, words in enumerate(chunks):
        const = chunk_weight(offset, index)
        for i, x in enumerate(words):
            r, c = divmod(i, columns)
            total += x * (column_weight(c) + row_weight(r, columns) + const)
        offset += len(words)
    return total & MASK64


@dataclass(frozen=True)
class _Chunk:
    params: tuple[int, ...]   # indices into the parameter list
    offset: int               # words before this chunk in the stream
    words: int


def _plan(sizes: Sequence[int], columns: int) -> list[_Chunk]:
    """The stream's chunks: tensors of a row or more alone, then the smaller ones.

    Both in parameter order; the small ones concatenated into chunks of ~``_CHUNK_WORDS``.
    """
    chunks: list[_Chunk] = []
    offset = 0
    for i, n in enumerate(sizes):
        if n >= columns:
            chunks.append(_Chunk((i,), offset, n))
            offset += n
    group: list[int] = []
    group_words = 0
    for i, n in enumerate(sizes):
        if n >= columns:
            continue
        group.append(i)
        group_words += n
        if group_words >= _CHUNK_WORDS:
            chunks.append(_Chunk(tuple(group), offset, group_words))
            offset, group, group_words = offset + group_words, [], 0
    if group:
        chunks.append(_Chunk(tuple(group), offset, group_words))
    return chunks


def _word_count(t: torch.Tensor) -> int:
    nbytes = t.numel() * t.element_size()
    return nbytes // 4 if nbytes % 4 == 0 else t.numel()


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (this rank's), else the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _words(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat ``int32`` tensor (a view when the layout allows)."""
    import torch

    local = t.to_local() if hasattr(t, "to_local") else t  # a DTensor: this rank's shard
    flat = local.detach().reshape(-1)
    if (flat.numel() * flat.element_size()) % 4 == 0:
        try:
            return flat.view(torch.int32)
        except RuntimeError:  # a misaligned storage offset: copy, then view
            return flat.clone().view(torch.int32)
    wide = torch.int16 if flat.element_size() == 2 else torch.uint8
    return flat.view(wide).to(torch.int32)


class ParamChecksum:
    """Digests a fixed list of parameters; :meth:`digest` returns a device int64 scalar.

    The plan (chunks, offsets, signature) is fixed at construction from the shapes and
    dtypes; parameters whose ``.data`` is later replaced with the same shape are read anew.
    """

    def __init__(self, params: Iterable[torch.Tensor], *, columns: int = COLUMNS) -> None:
        self.params = [p for p in params if p.numel() > 0]
        self.columns = columns
        self._weights: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        # chunk index -> (the parameters' data pointers, numpy views of their words, the
        # concatenation buffer): reused while every parameter keeps its storage.
        self._views: dict[int, tuple[tuple[int, ...], list[Any], Any]] = {}
        sig = hashlib.blake2b(digest_size=8)
        sizes = []
        for p in self.params:
            local = p.to_local() if hasattr(p, "to_local") else p
            sig.update(f"{tuple(local.shape)}:{local.dtype};".encode())
            sizes.append(_word_count(local))
        self._chunks = _plan(sizes, columns)
        #: Words in the stream; the guarantees hold below 2^32.
        self.words = sum(c.words for c in self._chunks)
        self.signature = int.from_bytes(sig.digest(), "little")
        #: Bytes of parameters one digest reads.
        self.nbytes = sum(p.numel() * p.element_size() for p in self.params)
        #: CPU parameters are reduced with numpy when it is installed (same digest).
        self.use_numpy = importlib.util.find_spec("numpy") is not None

    def digest(self) -> torch.Tensor:
        """The digest as an int64 0-dim tensor on the first parameter's device (async)."""
        import torch

        if not self.params:
            return torch.tensor(_signed(self.signature), dtype=torch.int64)
        device = self.params[0].device
        if self.use_numpy and device.type == "cpu":
            return torch.tensor(_signed(self._numpy_digest()), dtype=torch.int64)
        # torch.full, not torch.tensor: a host-to-device copy of a new tensor would wait
        # for the device's queue (a sync); a fill kernel is just queued.
        total = torch.full((), _signed(self.signature), dtype=torch.int64, device=device)
        for index, chunk in enumerate(self._chunks):
            part = self._chunk_digest(self._chunk_words(chunk, device), chunk, index)
            total += part.to(device, non_blocking=True)
        return total

    def _chunk_words(self, chunk: _Chunk, device: torch.device) -> torch.Tensor:
        import torch

        if len(chunk.params) == 1:
            return _words(self.params[chunk.params[0]])
        return torch.cat([_words(self.params[i]).to(device) for i in chunk.params])

    def _numpy_digest(self) -> int:
        """The same digest on the CPU through numpy.

        numpy's int32 → int64 sums widen on the fly; torch's first copy the words to int64
        (2.5-8× slower here).
        """
        import numpy as np

        cols = self.columns
        a, b = self._numpy_tables()
        total = self.signature
        for index, chunk in enumerate(self._chunks):
            words = self._numpy_words(index, chunk)
            rows, tail = divmod(words.size, cols)
            colsum = np.zeros(cols, dtype=np.int64)
            weighted = 0
            if rows:
                matrix = words[: rows * cols].reshape(rows, cols)
                colsum += matrix.sum(0, dtype=np.int64)
                weighted += int((matrix.sum(1, dtype=np.int64) * b[:rows]).sum())
            if tail:
                rest = words[rows * cols:].astype(np.int64)
                colsum[:tail] += rest
                weighted += int(rest.sum()) * int(b[rows])
            # Arrays wrap mod 2^64 silently; the few scalars are combined as Python ints.
            total += (int((colsum * a).sum()) + weighted
                      + int(colsum.sum()) * chunk_weight(chunk.offset, index))
        return total & MASK64

    def _numpy_words(self, index: int, chunk: _Chunk) -> Any:
        """A CPU chunk's words as a numpy array, through views kept between digests.

        The views are kept only when they are views (``_words`` copies odd layouts) and are
        rebuilt when a parameter's storage moves (``p.data = ...``): a live view reads the
        current values, and a storage it references cannot be freed and reused.
        """
        import numpy as np

        locals_ = [_local(self.params[i]) for i in chunk.params]
        key = tuple(t.data_ptr() for t in locals_)
        cached = self._views.get(index)
        if cached is None or cached[0] != key:
            words = [_words(self.params[i]) for i in chunk.params]
            if not all(w.data_ptr() == t.data_ptr() for w, t in zip(words, locals_,
                                                                     strict=True)):
                return self._chunk_words(chunk, self.params[0].device).numpy()
            arrays = [w.numpy() for w in words]
            buffer = np.empty(chunk.words, dtype=np.int32) if len(arrays) > 1 else None
            cached = (key, arrays, buffer)
            self._views[index] = cached
        _, arrays, buffer = cached
        if buffer is None:
            return arrays[0]
        return np.concatenate(arrays, out=buffer)

    def _numpy_tables(self) -> tuple[Any, Any]:
        import torch

        a, b = self._tables(torch.device("cpu"), 1)  # rows=1: sized for every chunk
        return a.numpy(), b.numpy()

    def hexdigest(self) -> str:
        """The digest now, as hex (waits for the device: for tests and one-off checks)."""
        return to_hex(int(self.digest().item()))

    def _chunk_digest(self, words: torch.Tensor, chunk: _Chunk, index: int) -> torch.Tensor:
        import torch

        cols = self.columns
        rows, tail = divmod(words.numel(), cols)
        a, b = self._tables(words.device, rows + 1)
        int64 = torch.int64
        colsum = torch.zeros(cols, dtype=int64, device=words.device)
        weighted_rows = torch.zeros((), dtype=int64, device=words.device)
        block = max(1, _BLOCK_WORDS // cols)
        for r0 in range(0, rows, block):
            r1 = min(rows, r0 + block)
            # One widening copy per block serves both reductions (and bounds the memory).
            wide = words[r0 * cols: r1 * cols].view(r1 - r0, cols).to(int64)
            colsum += wide.sum(0)
            weighted_rows += (wide.sum(1) * b[r0:r1]).sum()
        if tail:
            rest = words[rows * cols:].to(int64)
            colsum[:tail] += rest
            weighted_rows += rest.sum() * b[rows]
        const = _signed(chunk_weight(chunk.offset, index))
        return (colsum * a).sum() + weighted_rows + colsum.sum() * const

    def _tables(self, device: torch.device, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Column and row weights on ``device`` (cached; rows grow to the largest chunk)."""
        import torch

        key = (str(device), self.columns)
        cached = self._weights.get(key)
        if cached is not None and cached[1].numel() >= rows:
            return cached
        want = max(rows, max((c.words // self.columns + 1 for c in self._chunks), default=1))
        a = torch.tensor([_signed(column_weight(c)) for c in range(self.columns)],
                         dtype=torch.int64)
        b = _row_weights(want, self.columns)
        tables = (a.to(device), b.to(device))
        self._weights[key] = tables
        return tables


def _row_weights(rows: int, columns: int) -> torch.Tensor:
    """:func:`row_weight` for ``0..rows-1`` as an int64 tensor."""
    import torch

    # Once per model and device; ~1 µs a row (a 7B model's largest tensor: well under 1 s).
    return torch.tensor([_signed(row_weight(r, columns)) for r in range(rows)],
                        dtype=torch.int64)
