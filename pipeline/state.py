"""Detector state that survives worker restarts and rebalances: per-partition snapshots.

The baseline stage remembers which Kafka partition each entity's data comes from. Every
few seconds the worker exports the state of each partition it owns (registry keys,
entity identity, every detector array of those rows) and writes it to a compacted topic
keyed by ``topic:partition``. When a worker is assigned a partition it loads the latest
snapshot of it, so a restart or a rebalance resumes with learnt baselines instead of a
warm-up. Snapshots are bounded by the entities of one partition, so recovery reads a
few megabytes, not hours of input.

A partition's snapshot grows with its entities (about 60 MB for 53,000 GPUs and ranks),
far past Kafka's 1 MB message limit, so it travels as chunks keyed
``topic:partition#slot.i``, each tagged with the snapshot's generation and chunk count.
Successive snapshots alternate between two slots, so compaction never replaces the
previous snapshot's chunks while the next one is being written: the reader takes the
newest generation whose chunks are all there, and a crash halfway through a write leaves
the previous complete snapshot in force.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np

from trainguard.schemas.kafka_security import PLAINTEXT, KafkaSecurity

__all__ = [
    "CHUNK_BYTES",
    "chunk_snapshot",
    "decode_arrays",
    "encode_arrays",
    "partition_key",
    "read_snapshots",
]

log = logging.getLogger(__name__)

#: Payload bytes per state message: well under Kafka's default 1 MB message limit.
CHUNK_BYTES = 512 * 1024


class _Chunk(msgspec.Struct, array_like=True):
    generation: int
    index: int
    count: int
    data: bytes


def chunk_snapshot(
    key: str, blob: bytes, generation: int, slot: int = 0, previous_count: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[tuple[bytes, bytes | None]]:
    """The state messages ``(key, value)`` carrying ``blob`` as snapshot ``generation``.

    ``slot`` (0 or 1) should alternate between successive snapshots of one partition.
    Chunk keys that the slot's previous, larger snapshot used beyond this one's count are
    tombstoned (value ``None``), so compaction removes them.
    """
    count = max(1, -(-len(blob) // chunk_bytes))
    out: list[tuple[bytes, bytes | None]] = [
        (f"{key}#{slot}.{i}".encode(),
         msgspec.msgpack.encode(_Chunk(generation, i, count,
                                       blob[i * chunk_bytes:(i + 1) * chunk_bytes])))
        for i in range(count)
    ]
    out += [(f"{key}#{slot}.{i}".encode(), None) for i in range(count, previous_count)]
    return out


def _assemble(chunks: dict[str, _Chunk]) -> bytes | None:
    """The newest complete generation among one partition's chunks, or None."""
    by_gen: dict[int, dict[int, _Chunk]] = {}
    for c in chunks.values():
        by_gen.setdefault(c.generation, {})[c.index] = c
    for gen in sorted(by_gen, reverse=True):
        parts = by_gen[gen]
        count = next(iter(parts.values())).count
        if len(parts) == count:
            return b"".join(parts[i].data for i in range(count))
        log.warning("incomplete state snapshot skipped generation=%d chunks=%d/%d",
                    gen, len(parts), count)
    return None


class _Array(msgspec.Struct, array_like=True):
    dtype: str
    shape: list[int]
    data: bytes


def encode_arrays(doc: dict[str, Any]) -> bytes:
    """Msgpack of a nested dict whose leaves are numpy arrays, strings or numbers."""

    def enc(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            if arr.dtype.kind == "U":  # fixed-width unicode: send as a list of str
                return {"__str__": [str(x) for x in arr.tolist()]}
            return _Array(arr.dtype.str, list(arr.shape), arr.tobytes())
        if isinstance(value, dict):
            return {k: enc(v) for k, v in value.items()}
        return value

    return msgspec.msgpack.encode(enc(doc))


def decode_arrays(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_arrays`."""

    def dec(value: Any) -> Any:
        if isinstance(value, list) and len(value) == 3 and isinstance(value[2], bytes):
            dtype, shape, data = value
            return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()
        if isinstance(value, dict):
            if "__str__" in value:
                return np.array(value["__str__"], dtype=np.str_)
            return {k: dec(v) for k, v in value.items()}
        return value

    return dec(msgspec.msgpack.decode(blob))


def partition_key(topic: str, partition: int) -> str:
    """The snapshot key of one input partition."""
    return f"{topic}:{partition}"


def read_snapshots(bootstrap: str, topic: str, keys: Iterable[str],
                   timeout_s: float = 30.0,
                   security: KafkaSecurity = PLAINTEXT) -> dict[str, bytes]:
    """The latest snapshot of each of ``keys`` in the compacted state topic."""
    from kafka import KafkaConsumer, TopicPartition

    wanted = set(keys)
    if not wanted:
        return {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             group_id=None, client_id=f"tg-state-{uuid.uuid4().hex[:6]}",
                             **security.kafka_python_kwargs())
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return {}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        chunks: dict[str, dict[str, _Chunk]] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                log.warning("state topic read timed out topic=%s; resuming with partial state",
                            topic)
                break
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    key, _, where = (rec.key.decode() if rec.key else "").rpartition("#")
                    if key not in wanted or "." not in where:
                        continue  # another partition's state, or a pre-chunking record
                    held = chunks.setdefault(key, {})
                    if rec.value is None:
                        held.pop(where, None)
                    else:
                        held[where] = msgspec.msgpack.decode(rec.value, type=_Chunk)
        latest = {key: blob for key, parts in chunks.items()
                  if (blob := _assemble(parts)) is not None}
        return latest
    finally:
        consumer.close()
