"""Chunked detector-state snapshots: framing, newest-complete-generation choice, real broker."""

import os

import msgspec
import numpy as np
import pytest

from trainguard.pipeline.state import (
    _assemble,
    _Chunk,
    chunk_snapshot,
    decode_arrays,
    encode_arrays,
    read_snapshots,
)


def _chunks(messages):
    return {k.decode().rpartition("#")[2]: msgspec.msgpack.decode(v, type=_Chunk)
            for k, v in messages if v is not None}


def test_a_snapshot_larger_than_a_chunk_is_split_and_reassembled_byte_for_byte():
    blob = os.urandom(10_000)
    messages = chunk_snapshot("t:0", blob, generation=7, chunk_bytes=3_000)
    assert [k for k, _ in messages] == [b"t:0#0.0", b"t:0#0.1", b"t:0#0.2", b"t:0#0.3"]
    assert _assemble(_chunks(messages)) == blob


def test_a_crash_mid_write_leaves_the_previous_snapshot_in_force():
    old, new = os.urandom(5_000), os.urandom(5_000)
    held = _chunks(chunk_snapshot("t:0", old, generation=1, slot=0, chunk_bytes=2_000))
    assert _assemble(held) == old
    partial = chunk_snapshot("t:0", new, generation=2, slot=1, chunk_bytes=2_000)[:2]
    held.update(_chunks(partial))
    assert _assemble(held) == old  # generation 2 is incomplete: skipped
    held.update(_chunks(chunk_snapshot("t:0", new, generation=2, slot=1, chunk_bytes=2_000)))
    assert _assemble(held) == new


def test_a_smaller_snapshot_tombstones_the_chunk_keys_it_no_longer_uses():
    messages = chunk_snapshot("t:0", b"x" * 10, generation=3, slot=1, previous_count=3,
                              chunk_bytes=8)
    assert messages[-1] == (b"t:0#1.2", None)
    assert [v is None for _, v in messages] == [False, False, True]


def test_arrays_and_strings_round_trip():
    doc = {"keys": np.array(["a/0", "b/1"], dtype=np.str_), "x": np.arange(6.0).reshape(2, 3),
           "now": 5.0}
    back = decode_arrays(encode_arrays(doc))
    assert back["keys"].tolist() == ["a/0", "b/1"] and back["now"] == 5.0
    assert np.array_equal(back["x"], doc["x"])


@pytest.mark.integration
def test_read_snapshots_returns_the_latest_complete_snapshot_per_partition(
    new_topic, make_producer, bootstrap
):
    topic = new_topic("state", partitions=1)
    producer = make_producer()
    first, second = os.urandom(1_500_000), os.urandom(700_000)  # 3 chunks, then 2
    third = os.urandom(2_000_000)
    for k, v in chunk_snapshot("in:0", first, generation=1, slot=0):
        producer.send(topic, key=k, value=v)
    for k, v in chunk_snapshot("in:0", second, generation=2, slot=1):
        producer.send(topic, key=k, value=v)
    for k, v in chunk_snapshot("in:0", third, generation=3, slot=0, previous_count=3)[:2]:
        producer.send(topic, key=k, value=v)  # a worker died while writing generation 3
    other = os.urandom(100)
    for k, v in chunk_snapshot("in:1", other, generation=1):
        producer.send(topic, key=k, value=v)
    producer.flush()
    got = read_snapshots(bootstrap, topic, ["in:0", "in:1", "in:2"])
    assert got == {"in:0": second, "in:1": other}
