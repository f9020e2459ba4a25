"""The baselines' per-partition snapshot document: what is copied, folded and packed.

:meth:`BaselineStage.export <trainguard.pipeline.baselines.BaselineStage.export>` writes
format 2: each bank's ``recent.buf`` is folded onto its ``window.buf`` (the two windows
hold the same values on every row that never held an alarm, see
:func:`~trainguard.pipeline.state_codec.fold_rows`) and the whole is packed by
:func:`~trainguard.pipeline.state_codec.pack_arrays` (shuffled, zstd). Format 1 (every
array as is, msgpack, uncompressed: workers before #17 round 3) is still read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainguard.pipeline.detect.family import EntityFamily, finish_export
from trainguard.pipeline.state_codec import (
    SnapshotError,
    fold_rows,
    pack_arrays,
    unfold_rows,
    unpack_arrays,
)

__all__ = ["FORMAT", "copy_doc", "finish_doc", "max_state_bytes", "pack_doc", "read_doc"]

#: The format :func:`pack_doc` writes; :func:`read_doc` reads it and format 1.
FORMAT = 2
_FOLD = ("recent.buf", "window.buf")
#: Per entity, beyond its banks' rows: key, last-seen time and metadata (job, host ids).
_ENTITY_BYTES = 4096


def copy_doc(now: float, families: dict[str, EntityFamily], part: str) -> dict[str, Any]:
    """Copies of partition ``part``'s state: the part of an export that reads the families.

    What is left (:func:`finish_doc`, :func:`pack_doc`) reads only the copies, so it may run
    on another thread while batches go on: at 10,000 nodes the folds and the metadata were
    a third of the snapshot round's time on the event loop.
    """
    return {"format": FORMAT, "now": now,
            **{name: family.copy_part(part) for name, family in families.items()}}


def finish_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A :func:`copy_doc` document as it is packed: keys and metadata plain, banks folded."""
    out = dict(doc)
    for name, fam in doc.items():
        if isinstance(fam, dict):
            fam = finish_export(fam)
            fam["banks"] = {m: fold_rows(b, *_FOLD) for m, b in fam["banks"].items()}
            out[name] = fam
    return out


def pack_doc(doc: dict[str, Any]) -> bytes:
    """The snapshot blob of a :func:`copy_doc` document (run it off the loop)."""
    return pack_arrays(finish_doc(doc))


def read_doc(blob: bytes, max_bytes: int) -> dict[str, Any]:
    """The document in ``blob`` (format 1 or 2) with every bank's arrays as exported.

    Raises :class:`~trainguard.pipeline.state_codec.SnapshotError` (or ``ValueError``) for
    a blob that is damaged, of an unknown format, or inflates past ``max_bytes``.
    """
    doc = unpack_arrays(blob, max_bytes)
    fmt = doc.get("format")
    if fmt not in (1, FORMAT):
        raise ValueError(f"unknown baseline state format {fmt!r}; expected 1 or {FORMAT}")
    if fmt == FORMAT:
        for name, fam in doc.items():
            if isinstance(fam, dict):
                banks = fam.get("banks")
                if not isinstance(banks, dict):
                    raise SnapshotError(f"baseline state {name!r} has no banks")
                fam["banks"] = {m: unfold_rows(b, *_FOLD) for m, b in banks.items()}
    return doc


def max_state_bytes(families: dict[str, EntityFamily]) -> int:
    """The most one partition's state can take unpacked: every family full, in one part."""
    total = 1 << 20
    for family in families.values():
        row = _ENTITY_BYTES
        for bank in family.banks.values():
            empty = bank.state_rows(np.zeros(0, dtype=np.int64))
            row += sum(a.itemsize * int(np.prod(a.shape[1:])) for a in empty.values())
        total += family.max_entities * row
    return total
