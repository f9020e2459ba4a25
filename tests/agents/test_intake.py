"""StepIntake on a real Unix datagram socket: validation, bounded queue, counters."""

import socket
import stat
import threading
import time

import msgspec
import pytest

from trainguard.agents.claims import RankBindings
from trainguard.agents.intake import MAX_DATAGRAM_BYTES, StepIntake
from trainguard.agents.reporter import StepDatagram
from trainguard.errors import CollectorError
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import AgentCounters, Heartbeat, StepRecord


@pytest.fixture
def sender():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield s
    s.close()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def datagram(step=0, *, pid=100, dropped=0, rank=0, **fields):
    record = StepRecord(
        job_id="job-1", rank=rank, world_size=4, node="n", step=step, ts=1_795_000_000.0, **fields
    )
    return msgspec.json.encode(StepDatagram(pid=pid, dropped=dropped, step=record))


def test_a_full_queue_drops_new_records_and_counts_them(sock_path, sender):
    with StepIntake(sock_path, max_queue=3) as intake:
        for step in range(5):
            sender.sendto(datagram(step), str(sock_path))
            wait_for(lambda s=step: intake.steps_received == s + 1)
        assert intake.steps_dropped == 2
        assert [r.step for r in intake.drain()] == [0, 1, 2]
        sender.sendto(datagram(5), str(sock_path))
        wait_for(lambda: intake.queued == 1)
        assert [r.step for r in intake.drain()] == [5]


def test_malformed_datagrams_are_counted_by_reason_and_reading_goes_on(sock_path, sender):
    negative_rank = datagram().replace(b'"rank":0', b'"rank":-1')
    wrong_type = datagram().replace(b'"step":0', b'"step":"zero"')
    newer = datagram().replace(b'"v":1', b'"v":2')
    bad = [
        b"\x00\xffgarbage",
        b"",
        b"[1, 2, 3]",
        wrong_type,
        negative_rank,
        newer,
        b" " * (MAX_DATAGRAM_BYTES + 10),
    ]
    with StepIntake(sock_path) as intake:
        for data in bad:
            sender.sendto(data, str(sock_path))
            time.sleep(0.01)  # the kernel queues only ~10 datagrams
        sender.sendto(datagram(7), str(sock_path))
        wait_for(lambda: intake.steps_received == 1)
        assert [r.step for r in intake.drain()] == [7]
        assert intake.steps_malformed == len(bad)
        assert intake.malformed_by_reason == {
            "not_json": 2,
            "invalid": 3,
            "unsupported_version": 1,
            "too_large": 1,
        }


def test_nan_fields_named_by_the_sender_are_counted(sock_path, sender):
    record = StepRecord(job_id="j", rank=0, world_size=1, node="n", step=3, ts=1.0, loss=None)
    data = msgspec.json.encode(StepDatagram(pid=1, dropped=0, step=record, nonfinite=["loss"]))
    with StepIntake(sock_path) as intake:
        sender.sendto(data, str(sock_path))
        wait_for(lambda: intake.steps_received == 1)
        assert intake.nonfinite == 1 and intake.nonfinite_by_field == {"loss": 1}
        assert intake.drain()[0].loss is None


def test_client_drops_sum_the_highest_count_of_each_sender(sock_path, sender):
    sends = [(100, 0, 2), (100, 0, 5), (100, 0, 3), (200, 1, 4), (200, 1, 4)]
    with StepIntake(sock_path) as intake:
        for i, (pid, rank, dropped) in enumerate(sends):
            sender.sendto(datagram(i, pid=pid, rank=rank, dropped=dropped), str(sock_path))
            wait_for(lambda i=i: intake.steps_received == i + 1)
        assert intake.datagrams_dropped == 5 + 4
        assert intake.counts()["datagrams_dropped"] == 9


def test_drain_honours_max_items_oldest_first(sock_path, sender):
    with StepIntake(sock_path) as intake:
        for step in range(4):
            sender.sendto(datagram(step), str(sock_path))
            wait_for(lambda s=step: intake.steps_received == s + 1)
        assert [r.step for r in intake.drain(3)] == [0, 1, 2]
        assert [r.step for r in intake.drain(3)] == [3]
        assert intake.drain() == []


def test_start_replaces_a_stale_socket_and_applies_the_mode(sock_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(sock_path))
    stale.close()
    with StepIntake(sock_path, mode=0o666):
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o666
    assert not sock_path.exists()


def test_start_creates_the_parent_directory(sock_path):
    nested = sock_path.parent / "run" / "s.sock"
    with StepIntake(nested):
        assert stat.S_ISSOCK(nested.stat().st_mode)


def test_start_refuses_a_live_socket_or_a_regular_file(sock_path):
    with StepIntake(sock_path):
        with pytest.raises(CollectorError, match="already listening"):
            StepIntake(sock_path).start()
    sock_path.write_text("not a socket")
    with pytest.raises(CollectorError, match="not a socket"):
        StepIntake(sock_path).start()


def test_stop_is_prompt(sock_path):
    intake = StepIntake(sock_path, poll_interval_s=0.05)
    intake.start()
    t0 = time.monotonic()
    intake.stop()
    assert time.monotonic() - t0 < 2.0
    assert not sock_path.exists()


def test_eight_ranks_stepping_together_are_all_received(sock_path):
    senders = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(8)]
    try:
        with StepIntake(sock_path) as intake:
            for rank, s in enumerate(senders):
                s.setblocking(False)
                s.sendto(datagram(1, pid=rank, rank=rank), str(sock_path))
            wait_for(lambda: intake.steps_received == 8)
            assert sorted(r.rank for r in intake.drain()) == list(range(8))
    finally:
        for s in senders:
            s.close()


# -- hostile input (issue 13): a datagram costs itself, never the thread's time or the node's
#    heartbeat


def _hostile_datagrams():
    """Datagrams that made the decoder raise something other than a RecordError."""
    invalid_utf8 = datagram().replace(b'"job-1"', b'"job-\xff\xfe"')
    deep = b'{"v":1,"pid":1,"dropped":0,"junk":' + b"[" * 5000 + b"]" * 5000 + b"}"
    return [invalid_utf8, deep]


def test_bad_datagrams_between_good_ones_cost_no_sleep_and_every_good_one_arrives(
    sock_path, sender
):
    waits: list[float] = []
    stopped = threading.Event()

    def wait(seconds):
        waits.append(seconds)
        return stopped.wait(min(seconds, 0.005))

    intake = StepIntake(sock_path, poll_interval_s=0.002, read_error_backoff_s=1.0, wait=wait)
    intake.start()
    try:
        bad = _hostile_datagrams()
        for i in range(40):
            sender.sendto(bad[i % len(bad)], str(sock_path))
            sender.sendto(datagram(i), str(sock_path))
            wait_for(lambda i=i: intake.steps_received == i + 1)
        wait_for(lambda: intake.steps_malformed == 40)
    finally:
        stopped.set()
        intake.stop()
    assert [r.step for r in intake.drain()] == list(range(40))
    assert intake.read_errors == 0
    assert waits and set(waits) == {0.002}, "the intake waited longer than its poll interval"


def test_a_datagram_that_makes_handling_fail_is_counted_as_an_error(sock_path, sender):
    class Exploding(StepIntake):
        def _checkpoint(self, report, peer):
            raise ZeroDivisionError("a bug in one path")

    from trainguard.agents.reporter import CheckpointReport

    report = CheckpointReport(job_id="j", rank=0, node="n", step=1, ts=1.0, action="save",
                              checkpoint_id="c", digest="0123abcd")
    data = msgspec.json.encode(StepDatagram(pid=1, dropped=0, checkpoint=report))
    with Exploding(sock_path) as intake:
        sender.sendto(data, str(sock_path))
        sender.sendto(datagram(1), str(sock_path))
        wait_for(lambda: intake.steps_received == 1)
        assert intake.malformed_by_reason == {"error": 1}
        assert intake.read_errors == 0


def test_a_forged_drop_count_is_malformed_and_the_heartbeat_stays_valid(sock_path, sender):
    with StepIntake(sock_path) as intake:
        sender.sendto(datagram(0, pid=999_999, dropped=2**63 - 1), str(sock_path))
        sender.sendto(datagram(1, pid=100, dropped=3), str(sock_path))
        wait_for(lambda: intake.steps_received == 1 and intake.steps_malformed == 1)
        counts = intake.counts()
    assert intake.malformed_by_reason == {"invalid": 1}
    assert counts["datagrams_dropped"] == 3
    hb = Heartbeat(cluster="c", node="n", ts=1.0, seq=0, agent_id="a", agent_version="0",
                   uptime_s=1.0, backend="simulated", gpu_count=1,
                   counters=AgentCounters(datagrams_dropped=counts["datagrams_dropped"],
                                          reporters_evicted=counts["reporters_evicted"]))
    assert RecordDecoder(Heartbeat).decode(encode(hb)).counters.datagrams_dropped == 3


def test_the_per_reporter_drop_memory_is_capped_and_evictions_are_counted(sock_path, sender):
    # A reporter is (the kernel's pid, job, rank): one process, three ranks here.
    with StepIntake(sock_path, max_reporters=2,
                    bindings=RankBindings(max_bindings=100)) as intake:
        for i, rank in enumerate([1, 2, 3, 3]):
            sender.sendto(datagram(i, rank=rank, dropped=1), str(sock_path))
            wait_for(lambda i=i: intake.steps_received == i + 1)
        assert intake.counts()["reporters_evicted"] == 1
        assert intake.datagrams_dropped == 3


def test_nonfinite_names_a_sender_makes_up_grow_no_dictionary(sock_path, sender):
    record = StepRecord(job_id="j", rank=0, world_size=1, node="n", step=3, ts=1.0)
    names = ["loss"] + [f"made-up-{i}" for i in range(50)]
    with StepIntake(sock_path) as intake:
        for i, nonfinite in enumerate([names, ["only-made-up"]]):
            data = msgspec.json.encode(
                StepDatagram(pid=1, dropped=0, step=record, nonfinite=nonfinite))
            sender.sendto(data, str(sock_path))
            wait_for(lambda i=i: intake.steps_received == i + 1)
        assert intake.nonfinite_by_field == {"loss": 1, "unknown": 1}
        assert [r.nonfinite for r in intake.drain()] == [("loss",), ()]
