"""Detector state that survives worker restarts and rebalances: per-partition snapshots.

The baseline stage remembers which Kafka partition each entity's data comes from. Every
few seconds the worker exports the state of each partition it owns (registry keys,
entity identity, every detector array of those rows) and writes it to a compacted topic
keyed by ``topic:partition``. When a worker is assigned a partition it loads the latest
snapshot of it, so a restart or a rebalance resumes with learnt baselines instead of a
warm-up. Snapshots are bounded by the entities of one partition, so recovery reads a
few megabytes, not hours of input.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np

__all__ = ["decode_arrays", "encode_arrays", "partition_key", "read_snapshots"]

log = logging.getLogger(__name__)


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
                   timeout_s: float = 30.0) -> dict[str, bytes]:
    """The latest snapshot of each of ``keys`` in the compacted state topic."""
    from kafka import KafkaConsumer, TopicPartition

    wanted = set(keys)
    if not wanted:
        return {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             group_id=None, client_id=f"tg-state-{uuid.uuid4().hex[:6]}")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return {}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        latest: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                log.warning("state topic read timed out topic=%s; resuming with partial state",
                            topic)
                break
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    key = rec.key.decode() if rec.key else ""
                    if key in wanted:
                        if rec.value is None:
                            latest.pop(key, None)
                        else:
                            latest[key] = rec.value
        return latest
    finally:
        consumer.close()
