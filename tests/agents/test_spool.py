import errno
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


# -- a disk that refuses writes (issue 13): the agent goes on, records wait in memory


class Disk:
    """Opens segments whose writes fail with ENOSPC while ``full`` (half-written if ``torn``)."""

    def __init__(self):
        self.full = False
        self.torn = False

    def open(self, path):
        return _FlakyFile(open(path, "ab", buffering=0), self)


class _FlakyFile:
    def __init__(self, raw, disk):
        self._raw, self._disk = raw, disk

    def write(self, data):
        if self._disk.full:
            if self._disk.torn:
                self._raw.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._raw.write(data)

    def truncate(self, size):
        return self._raw.truncate(size)

    def close(self):
        self._raw.close()


class Clock:
    def __init__(self):
        self.now = 1_795_000_000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("torn", [False, True])
def test_a_full_disk_holds_records_in_memory_readable_in_order_then_writes_them(tmp_path, torn):
    disk, clock = Disk(), Clock()
    spool = Spool(tmp_path, opener=disk.open, clock=clock, retry_interval_s=1.0)
    _fill(spool, 2)
    disk.full, disk.torn = True, torn
    _fill(spool, 3)  # must not raise
    assert spool.write_errors >= 1 and spool.memory_depth == 3
    assert [e.seq for e in spool.read(10)] == [0, 1, 2, 3, 4]
    disk.full = False
    clock.now += 2.0  # past the retry interval
    spool.append("t", b"k", b"after")
    assert spool.memory_depth == 0
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.corrupt == 0
    got = reopened.read(10)
    assert [e.seq for e in got] == [0, 1, 2, 3, 4, 5] and got[-1].value == b"after"


def test_records_held_in_memory_are_sent_and_committed_while_the_disk_stays_full(tmp_path):
    disk = Disk()
    spool = Spool(tmp_path, opener=disk.open)
    disk.full = True
    seqs = _fill(spool, 4)
    assert [e.seq for e in spool.read(10)] == seqs
    spool.commit(seqs[-1])
    assert spool.depth == 0 and spool.memory_depth == 0


def test_the_memory_queue_is_bounded_and_drops_the_oldest_counted(tmp_path):
    disk = Disk()
    spool = Spool(tmp_path, opener=disk.open, memory_max_bytes=1000)
    _fill(spool, 2, size=100)
    disk.full = True
    _fill(spool, 20, size=100)
    kept = spool.memory_depth
    assert 0 < kept < 20 and spool.dropped == 20 - kept
    assert [e.seq for e in spool.read(100)] == [0, 1] + list(range(22 - kept, 22))


def test_a_cursor_that_cannot_be_saved_is_counted_not_raised(tmp_path, monkeypatch):
    spool = Spool(tmp_path)
    _fill(spool, 3)
    spool.read(3)

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    spool.commit(2)
    assert spool.write_errors == 1 and spool.depth == 0
