"""StepIntake knows who speaks: kernel credentials per datagram, one live process per rank.

Senders are real processes (``python -c`` children) writing to a real Unix datagram socket,
so the pids and uids the agent records are the kernel's.
"""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from trainguard.agents.intake import StepIntake
from trainguard.agents.reporter import CheckpointReport, StepDatagram
from trainguard.errors import CollectorError
from trainguard.schemas.records import StepRecord

ROOT = Path(__file__).resolve().parents[2]
# Sends the datagram given in hex, prints its pid, then lives until its stdin closes.
_SEND = ("import os, socket, sys\n"
         "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
         "s.sendto(bytes.fromhex(sys.argv[2]), sys.argv[1])\n"
         "print(os.getpid(), flush=True)\n"
         "sys.stdin.read()\n")


class Sender:
    """A live process that sent one datagram; ``close()`` ends it."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SEND, str(path), data.hex()], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def senders():
    started: list[Sender] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.close()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def step(step=1, rank=0, **fields) -> bytes:
    record = StepRecord(job_id="job-1", rank=rank, world_size=4, node="n", step=step,
                        ts=1_795_000_000.0, loss=2.0, **fields)
    return msgspec.json.encode(StepDatagram(pid=1, dropped=0, step=record))


def checkpoint(rank=0) -> bytes:
    report = CheckpointReport(job_id="job-1", rank=rank, node="n", step=5, ts=1_795_000_000.0,
                              action="save", checkpoint_id="c/5", digest="abcdef0123456789")
    return msgspec.json.encode(StepDatagram(pid=1, dropped=0, checkpoint=report))


def send(senders: list[Sender], path: Path, data: bytes) -> Sender:
    s = Sender(path, data)
    senders.append(s)
    return s


def test_records_carry_the_kernels_pid_and_uid_not_what_the_trainer_wrote(sock_path, senders):
    with StepIntake(sock_path) as intake:
        s = send(senders, sock_path, step(pid=1, uid=4242))  # a trainer claiming to be init
        wait_for(lambda: intake.queued == 1)
        [record] = intake.drain()
    assert (record.pid, record.uid) == (s.pid, os.getuid())


def test_a_second_live_process_claiming_a_rank_is_refused_and_reported(sock_path, senders):
    with StepIntake(sock_path) as intake:
        holder = send(senders, sock_path, step(1))
        wait_for(lambda: intake.steps_received == 1)
        claimant = send(senders, sock_path, step(1, loss_scale=1.0))
        wait_for(lambda: intake.counts()["claims_refused"] == 1)
        send(senders, sock_path, step(1, rank=1))  # another rank: its own binding
        wait_for(lambda: intake.steps_received == 2)
        counts = intake.counts()
        claims = intake.drain_claims()
        records = intake.drain()
    assert (counts["claims_refused"], counts["claim_conflicts"]) == (1, 1)
    assert [(r.rank, r.pid) for r in records] == [(0, holder.pid), (1, senders[2].pid)]
    [claim] = claims["job-1"]
    assert (claim.rank, claim.step, claim.pid, claim.uid) == (0, 1, claimant.pid, os.getuid())
    assert (claim.holder_pid, claim.holder_uid) == (holder.pid, os.getuid())


def test_a_second_process_cannot_report_checkpoints_for_the_rank_either(sock_path, senders):
    with StepIntake(sock_path) as intake:
        send(senders, sock_path, step(1))
        wait_for(lambda: intake.steps_received == 1)
        send(senders, sock_path, checkpoint())
        wait_for(lambda: intake.counts()["claims_refused"] == 1)
        assert intake.drain_checkpoints() == []
        assert intake.checkpoints_received == 0


def test_the_rank_passes_to_a_new_process_once_its_holder_exited(sock_path, senders):
    with StepIntake(sock_path) as intake:
        first = send(senders, sock_path, step(1))
        wait_for(lambda: intake.steps_received == 1)
        first.close()  # the trainer restarted
        second = send(senders, sock_path, step(1))
        wait_for(lambda: intake.steps_received == 2)
        records = intake.drain()
        assert intake.counts()["claims_refused"] == 0 and intake.bindings.rebound == 1
    assert [r.pid for r in records] == [first.pid, second.pid]


def test_the_socket_is_0660_and_given_the_configured_group(sock_path):
    others = [g for g in os.getgroups() if g != os.getegid()]
    if not others and os.geteuid() == 0:
        others = [grp.getgrnam("daemon").gr_gid]
    if not others:
        pytest.skip("needs a group other than the primary one (or root)")
    name = grp.getgrgid(others[0]).gr_name
    with StepIntake(sock_path, group=name):
        st = sock_path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == others[0] != os.getegid()


def test_a_group_that_does_not_exist_is_a_clear_error_naming_it(sock_path):
    with pytest.raises(CollectorError, match="group 'tg-no-such-group' does not exist"):
        StepIntake(sock_path, group="tg-no-such-group").start()
    assert not sock_path.exists()


def test_a_datagram_without_credentials_is_malformed_not_queued(sock_path):
    intake = StepIntake(sock_path)
    intake._handle_safely(memoryview(step(1)), truncated=False, peer=None)
    assert intake.malformed_by_reason == {"no_credentials": 1} and intake.queued == 0
