"""RankBindings: a (job, rank) belongs to the first live process claiming it."""

import os
import socket
import subprocess
import sys

import pytest

from trainguard.agents.claims import (
    CREDENTIALS_SPACE,
    Binding,
    Peer,
    RankBindings,
    parent_pid,
    peer_credentials,
    process_start,
)
from trainguard.schemas.records import MAX_CLAIMS_PER_BATCH

A, B, C = Peer(100, 1000, 1000), Peer(200, 1001, 1000), Peer(300, 1002, 1000)


def _bindings(alive: set[int], parents: dict[int, int] | None = None, **kw) -> RankBindings:
    return RankBindings(alive=lambda pid, _start: pid in alive, start=lambda _pid: 7,
                        parent=(parents or {}).get, wall=lambda: 1_800_000_000.0, **kw)


def test_the_first_process_binds_the_rank_and_keeps_reporting():
    b = _bindings({100})
    assert b.admit("job", 0, A, 1) and b.admit("job", 0, A, 2)
    assert (b.refused, b.conflicts) == (0, 0) and b.drain() == {}


def test_a_second_live_process_is_refused_and_reported_once_naming_both():
    b = _bindings({100, 200})
    assert b.admit("job", 3, A, 10)
    assert not b.admit("job", 3, B, 11)
    assert not b.admit("job", 3, B, 12)
    assert (b.refused, b.conflicts) == (2, 1)
    [claim] = b.drain()["job"]
    assert (claim.rank, claim.step, claim.pid, claim.uid) == (3, 11, 200, 1001)
    assert (claim.holder_pid, claim.holder_uid) == (100, 1000)
    assert claim.holder_since == 1_800_000_000.0
    assert b.drain() == {}  # drained; the same claimant is not reported again
    assert not b.admit("job", 3, B, 13) and b.drain() == {}


def test_another_claimant_of_the_same_rank_is_its_own_report():
    b = _bindings({100, 200, 300})
    b.admit("job", 0, A)
    b.admit("job", 0, B)
    b.admit("job", 0, C)
    assert [c.pid for c in b.drain()["job"]] == [200, 300]


def test_the_holders_own_child_with_its_uid_speaks_for_the_rank_too():
    child, stranger = Peer(101, 1000, 1000), Peer(102, 1001, 1000)
    b = _bindings({100, 101, 102}, parents={101: 100, 102: 100})
    b.admit("job", 0, A)
    assert b.admit("job", 0, child) and b.admit("job", 0, child)
    assert not b.admit("job", 0, stranger)  # a child of the holder, but another user
    assert (b.refused, b.conflicts) == (1, 1)


def test_a_claimant_of_the_holders_uid_gone_before_it_was_read_is_refused_unreported():
    b = _bindings({100, 200}, parents={200: 1})
    b.admit("job", 0, A)
    gone = Peer(300, A.uid, A.gid)  # no parent to read: it exited
    assert not b.admit("job", 0, gone)
    assert (b.refused, b.unverified, b.conflicts) == (1, 1, 0) and b.drain() == {}
    other_user = Peer(301, 1009, 1000)
    assert not b.admit("job", 0, other_user)  # another user: reported, gone or not
    assert b.conflicts == 1


def test_other_ranks_and_jobs_are_bound_independently():
    b = _bindings({100, 200})
    assert b.admit("job", 0, A) and b.admit("job", 1, B) and b.admit("other", 0, B)
    assert b.refused == 0


def test_the_rank_goes_to_a_new_process_once_its_holder_is_gone():
    alive = {100, 200}
    b = _bindings(alive)
    b.admit("job", 0, A)
    alive.discard(100)  # the trainer restarted
    assert b.admit("job", 0, B)
    assert (b.rebound, b.refused) == (1, 0)
    alive.add(100)  # the new holder is B now: A's pid coming back is a second claimant
    assert not b.admit("job", 0, A)


def test_bindings_are_bounded_and_evictions_counted():
    b = _bindings({100, 200}, max_bindings=2)
    for rank in range(5):
        b.admit("job", rank, A)
    assert b.evicted == 3
    assert b.admit("job", 0, B)  # forgotten: B may bind it


def test_pending_claims_per_job_are_capped_at_what_one_batch_carries():
    b = _bindings(set(range(100_000)), max_bindings=100_000)
    for rank in range(MAX_CLAIMS_PER_BATCH + 10):
        b.admit("job", rank, A)
        b.admit("job", rank, B)
    assert len(b.drain()["job"]) == MAX_CLAIMS_PER_BATCH
    assert b.refused == MAX_CLAIMS_PER_BATCH + 10
    # The rest are reported when the claimants send again, after the drain.
    b.admit("job", MAX_CLAIMS_PER_BATCH, B)
    assert [c.rank for c in b.drain()["job"]] == [MAX_CLAIMS_PER_BATCH]


def test_process_start_reads_a_live_process_and_none_for_a_dead_one():
    assert isinstance(process_start(os.getpid()), int)
    assert parent_pid(os.getpid()) == os.getppid()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    assert process_start(int(child.stdout)) is None


def test_the_default_liveness_tells_a_recycled_pid_from_its_holder():
    b = RankBindings(wall=lambda: 0.0)
    me = Peer(os.getpid(), os.getuid(), os.getgid())
    assert b.admit("job", 0, me)
    assert not b.admit("job", 0, Peer(1, 0, 0))  # I live: pid 1 is refused
    b2 = RankBindings(start=lambda _pid: -1, wall=lambda: 0.0)  # my start time "changed"
    b2.admit("job", 0, me)
    assert b2.admit("job", 0, Peer(1, 0, 0))  # the holder's pid now names another process
    assert b2.rebound == 1


def test_credentials_come_from_the_kernel_whatever_the_sender_says(tmp_path):
    path = str(tmp_path / "s.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    rx.bind(path)
    try:
        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
                "s.sendto(b'{\"pid\": 1}', sys.argv[1]); import os; print(os.getpid())")
        child = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                               text=True, check=True)
        rx.settimeout(5)
        _, anc, _, _ = rx.recvmsg(1024, CREDENTIALS_SPACE)
    finally:
        rx.close()
    assert peer_credentials(anc) == Peer(int(child.stdout), os.getuid(), os.getgid())


def test_no_ancillary_data_means_no_credentials():
    assert peer_credentials([]) is None
    assert peer_credentials([(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"\0" * 4)]) is None


@pytest.mark.parametrize("max_bindings", [0, -1])
def test_max_bindings_must_be_positive(max_bindings):
    with pytest.raises(ValueError, match="max_bindings"):
        RankBindings(max_bindings=max_bindings)


def test_bound_lists_each_rank_and_its_process():
    b = _bindings({100, 200})
    b.admit("job", 0, A)
    b.admit("other", 5, B)
    assert b.bound() == [Binding("job", 0, 100, 1000, 7, 1000),
                         Binding("other", 5, 200, 1001, 7, 1000)]


def test_a_released_rank_binds_the_next_process_even_while_the_old_one_looks_alive():
    b = _bindings({100, 200})
    b.admit("job", 0, A)
    assert not b.release("job", 0, 200)  # not the holder: nothing freed
    assert b.release("job", 0, 100) and b.released == 1
    assert b.admit("job", 0, B) and b.refused == 0
    assert [x.pid for x in b.bound()] == [200]
