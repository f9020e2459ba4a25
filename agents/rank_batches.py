"""Packing a job's rank events and manifests into step batches that the wire accepts.

A :class:`~trainguard.schemas.records.StepBatch` carries at most
:data:`~trainguard.schemas.ranks.MAX_EVENTS_PER_BATCH` events and
:data:`~trainguard.schemas.ranks.MAX_MANIFESTS_PER_BATCH` manifests, and every message the
agent sends stays below its largest message size. The common case (a few events, perhaps
a manifest) is one batch, encoded once; otherwise events and manifests are split into as
many batches as needed, and one item too large to travel even alone is handed back to the
caller (dead-lettered on the node, as for steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import msgspec

from trainguard.schemas.ranks import (
    MAX_EVENTS_PER_BATCH,
    MAX_MANIFESTS_PER_BATCH,
    EnvManifest,
    RankEvent,
)

__all__ = ["BatchEncoder", "rank_batches"]

#: Encodes one step batch of a job with these events and manifests.
BatchEncoder = Callable[[list[RankEvent], list[EnvManifest]], bytes]
T = TypeVar("T", RankEvent, EnvManifest)
# Room for the batch's seq to grow while the chunks are numbered.
_SEQ_ROOM = 20


def rank_batches(
    encode_batch: BatchEncoder,
    events: Sequence[RankEvent],
    manifests: Sequence[EnvManifest],
    limit: int,
    oversized: Callable[[bytes], None],
) -> Iterator[bytes]:
    """Encoded batches, each within ``limit`` bytes and the wire's item bounds.

    ``oversized`` receives the encoded batch of each item that cannot fit ``limit`` alone.
    """
    if not events and not manifests:
        return
    if len(events) <= MAX_EVENTS_PER_BATCH and len(manifests) <= MAX_MANIFESTS_PER_BATCH:
        data = encode_batch(list(events), list(manifests))
        if len(data) <= limit:
            yield data
            return
    base = len(encode_batch([], [])) + _SEQ_ROOM
    for chunk in _chunks(events, MAX_EVENTS_PER_BATCH, base, limit,
                         lambda e: oversized(encode_batch([e], []))):
        yield encode_batch(chunk, [])
    for part in _chunks(manifests, MAX_MANIFESTS_PER_BATCH, base, limit,
                        lambda m: oversized(encode_batch([], [m]))):
        yield encode_batch([], part)


def _chunks(items: Sequence[T], max_count: int, base: int, limit: int,
            oversized: Callable[[T], None]) -> Iterator[list[T]]:
    """``items`` in order, in lists of at most ``max_count`` whose batch fits ``limit``."""
    chunk: list[T] = []
    size = base
    for item in items:
        n = len(msgspec.json.encode(item)) + 1  # as encoded in the batch, plus a comma
        if base + n > limit:
            oversized(item)
            continue
        if chunk and (size + n > limit or len(chunk) >= max_count):
            yield chunk
            chunk, size = [], base
        chunk.append(item)
        size += n
    if chunk:
        yield chunk
