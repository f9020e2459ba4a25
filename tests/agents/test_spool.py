from pathlib import Path

import pytest

from trainguard.agents.spool import Spool
from trainguard.errors import TrainguardError


def _fill(spool, n, size=100, topic="t"):
    return [spool.append(topic, f"k{i}".encode(), bytes([i % 256]) * size) for i in range(n)]


def test_entries_come_back_in_order_with_topic_key_and_value(tmp_path):
    spool = Spool(tmp_path)
    spool.append("a", b"k1", b"v1")
    spool.append("b", b"", b"v2")
    got = spool.read(10)
    assert [(e.seq, e.topic, e.key, e.value) for e in got] == [
        (0, "a", b"k1", b"v1"),
        (1, "b", b"", b"v2"),
    ]
    assert spool.read(10) == []
    assert spool.depth == 2


def test_commit_advances_the_cursor_and_a_restart_replays_only_the_rest(tmp_path):
    spool = Spool(tmp_path, segment_bytes=1024)
    _fill(spool, 30)
    spool.read(30)
    spool.commit(11)
    spool.close()
    reopened = Spool(tmp_path, segment_bytes=1024)
    assert [e.seq for e in reopened.read(100)] == list(range(12, 30))
    assert reopened.depth == 18
    assert reopened.append("t", b"k", b"v") == 30


def test_rewind_rereads_everything_not_committed(tmp_path):
    spool = Spool(tmp_path)
    _fill(spool, 5)
    spool.read(3)
    spool.commit(0)
    spool.rewind()
    assert [e.seq for e in spool.read(10)] == [1, 2, 3, 4]


def test_full_spool_drops_oldest_segments_and_counts_them(tmp_path):
    spool = Spool(tmp_path, max_bytes=8192, segment_bytes=2048)
    _fill(spool, 200, size=100)
    assert spool.size_bytes <= 8192
    assert spool.dropped > 0
    remaining = spool.read(1000)
    assert spool.dropped + len(remaining) == 200
    assert [e.seq for e in remaining] == list(range(200 - len(remaining), 200))


def test_records_already_read_are_not_counted_as_dropped(tmp_path):
    spool = Spool(tmp_path, max_bytes=8192, segment_bytes=2048)
    _fill(spool, 10, size=100)
    in_flight = spool.read(10)
    _fill(spool, 200, size=100)
    rest = spool.read(1000)
    assert len(in_flight) + spool.dropped + len(rest) == 210


def test_committed_segments_are_deleted(tmp_path):
    spool = Spool(tmp_path, segment_bytes=1024)
    seqs = _fill(spool, 50)
    spool.read(50)
    spool.commit(seqs[-1])
    assert len(list(tmp_path.glob("seg-*.log"))) == 1


def test_a_torn_tail_is_truncated_on_open_and_earlier_entries_survive(tmp_path):
    spool = Spool(tmp_path)
    _fill(spool, 3)
    spool.close()
    seg = sorted(Path(tmp_path).glob("seg-*.log"))[-1]
    with open(seg, "ab") as fh:
        fh.write(b"\x50\x00\x00\x00partial")
    reopened = Spool(tmp_path)
    assert reopened.corrupt == 1
    assert [e.seq for e in reopened.read(10)] == [0, 1, 2]
    assert reopened.append("t", b"k", b"v") == 3
    assert [e.seq for e in reopened.read(10)] == [3]


def test_a_too_small_bound_is_rejected():
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(Path("/tmp/never-created"), max_bytes=10)


def test_a_second_spool_on_the_same_directory_is_refused_until_the_first_closes(tmp_path):
    first = Spool(tmp_path)
    with pytest.raises(TrainguardError, match="in use by another agent"):
        Spool(tmp_path)
    first.close()
    Spool(tmp_path).close()


def test_a_closed_spool_hands_out_nothing_and_refuses_appends(tmp_path):
    spool = Spool(tmp_path)
    spool.append("t", b"k", b"v")
    spool.close()
    assert spool.read(10) == []
    with pytest.raises(TrainguardError, match="closed"):
        spool.append("t", b"k", b"v")
