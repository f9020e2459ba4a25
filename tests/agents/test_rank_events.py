"""The trainer kit's events and manifests on the step socket, and the queue that holds them.

Senders are real processes (a StepReporter in a child, or raw datagrams from a child or
this test process), so the pids the agent stamps are the kernel's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from tests.agents.trainer_proc import ROOT, Trainer, wait_for
from trainguard.agents.claims import Peer
from trainguard.agents.intake import StepIntake
from trainguard.agents.rank_events import RankReports, env_manifest, trainer_event
from trainguard.agents.reporter import ManifestReport, StepDatagram, TrainerEvent
from trainguard.schemas.codec import RecordError
from trainguard.schemas.ranks import MAX_MANIFEST_ENTRIES, EnvManifest, RankEvent
from trainguard.schemas.records import StepRecord

T0 = 1_795_000_000.0
# Sends the datagram given in hex, prints its pid, then lives until its stdin closes.
_SEND = ("import os, socket, sys\n"
         "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
         "s.sendto(bytes.fromhex(sys.argv[2]), sys.argv[1])\n"
         "print(os.getpid(), flush=True)\n"
         "sys.stdin.read()\n")


@pytest.fixture
def intake(sock_path):
    with StepIntake(sock_path) as running:
        yield running


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def sender():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield s
    s.close()


def _raw_sender(path: Path, data: bytes, children: list) -> int:
    """A live process that sent ``data``; its pid."""
    proc = subprocess.Popen([sys.executable, "-c", _SEND, str(path), data.hex()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    children.append(proc)
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def _bye(rank=0, *, pid=1, job="job-1") -> bytes:
    event = TrainerEvent(job_id=job, rank=rank, ts=T0, event="bye", reason="finished", step=5)
    return msgspec.json.encode(StepDatagram(pid=pid, dropped=0, event=event))


def _manifest_dg(entries: dict[str, str], rank=0) -> bytes:
    report = ManifestReport(job_id="job-1", rank=rank, ts=T0, fingerprint="f" * 64,
                            entries=entries)
    return msgspec.json.encode(StepDatagram(pid=1, dropped=0, manifest=report))


# The queue.


def test_a_full_event_queue_drops_the_newest_and_counts_them():
    reports = RankReports(max_events=2)
    events = [RankEvent(rank=r, ts=T0, event="exited") for r in range(3)]
    assert [reports.add_event("j", e) for e in events] == [True, True, False]
    assert reports.events_dropped == 1
    assert [e.rank for e in reports.drain()["j"].events] == [0, 1]
    assert reports.add_event("j", events[2]) and reports.drain()["j"].events == [events[2]]


def test_a_manifest_waiting_for_its_job_is_queued_once_per_fingerprint():
    reports = RankReports()
    one = EnvManifest(rank=0, ts=T0, fingerprint="a" * 64, entries={"x": "1"})
    same = EnvManifest(rank=1, ts=T0, fingerprint="a" * 64, entries={"x": "1"})
    other_job = EnvManifest(rank=1, ts=T0, fingerprint="a" * 64, entries={"x": "1"})
    reports.add_manifest("j", one)
    reports.add_manifest("j", same)
    reports.add_manifest("k", other_job)
    drained = reports.drain()
    assert drained["j"].manifests == [one] and drained["k"].manifests == [other_job]
    assert reports.manifests_duplicate == 1
    reports.add_manifest("j", same)  # after a drain: sent again
    assert reports.drain()["j"].manifests == [same]


def test_a_trainer_event_takes_the_kernels_pid():
    report = TrainerEvent(job_id="j", rank=3, ts=T0, event="waiting", step=9, since=T0 - 2,
                          collective=41)
    event = trainer_event(report, Peer(pid=4321, uid=1000, gid=1000))
    assert event == RankEvent(rank=3, ts=T0, event="waiting", pid=4321, step=9,
                              since=T0 - 2, collective=41)
    assert trainer_event(report, Peer(pid=0, uid=0, gid=0)).pid is None


@pytest.mark.parametrize("entries, message", [
    ({f"n{i}": "d" for i in range(MAX_MANIFEST_ENTRIES + 1)}, "entries; at most 8192"),
    ({"x" * 513: "d"}, "has 513 characters; expected 1 to 512"),
    ({"": "d"}, "has 0 characters"),
    ({"torch:nn/linear.py": "d" * 129}, "digest of 129 characters"),
])
def test_a_manifest_out_of_bounds_is_invalid(entries, message):
    report = ManifestReport(job_id="j", rank=0, ts=T0, fingerprint="f", entries=entries)
    with pytest.raises(RecordError) as exc:
        env_manifest(report)
    assert exc.value.reason == "invalid" and message in exc.value.message


# The intake.


def test_malformed_event_and_manifest_datagrams_are_counted_and_queue_nothing(
        intake, sender):
    step = StepRecord(job_id="job-1", rank=0, world_size=1, node="n", step=1, ts=T0)
    both = msgspec.json.encode(StepDatagram(
        pid=1, dropped=0, step=step,
        event=TrainerEvent(job_id="job-1", rank=0, ts=T0, event="bye", reason="error")))
    bad_kind = _bye().replace(b'"event":"bye"', b'"event":"exited"')
    bad = [
        _manifest_dg({f"n{i}": "d" for i in range(MAX_MANIFEST_ENTRIES + 1)}),  # ~120 KB
        _manifest_dg({"x" * 600: "d"}),
        both,
        bad_kind,
    ]
    for data in bad:
        sender.sendto(data, str(intake.socket_path))
    wait_for(lambda: intake.steps_malformed == len(bad))
    assert intake.malformed_by_reason == {"invalid": 4}
    assert intake.rank_reports.drain() == {} and intake.steps_received == 0


def test_a_manifest_from_a_trainer_is_queued_for_its_job(intake):
    trainer = Trainer(intake.socket_path, rank=2)
    try:
        trainer.do("manifest " + "c" * 64)
        wait_for(lambda: intake.rank_reports.manifests_received == 1)
    finally:
        trainer.reap()
    [manifest] = intake.rank_reports.drain()["job-1"].manifests
    assert manifest.rank == 2 and manifest.fingerprint == "c" * 64
    assert manifest.entries == {"script:train.py": "ab" * 32, "version:torch": "2.5.1"}


def test_an_event_is_stamped_with_the_senders_real_pid_not_the_one_it_wrote(intake, children):
    pid = _raw_sender(intake.socket_path, _bye(rank=1, pid=1), children)
    wait_for(lambda: intake.rank_reports.events_received == 1)
    [event] = intake.rank_reports.drain()["job-1"].events
    assert event.pid == pid != 1 and event.event == "bye" and event.reason == "finished"


def test_a_forged_bye_for_a_rank_another_live_process_holds_is_refused(intake, children):
    holder = Trainer(intake.socket_path, rank=0)
    try:
        holder.do("step 1")
        wait_for(lambda: intake.steps_received == 1)
        forger = _raw_sender(intake.socket_path, _bye(rank=0, pid=holder.pid), children)
        wait_for(lambda: intake.bindings.refused == 1)
        assert intake.rank_reports.drain() == {}
        [claim] = intake.drain_claims()["job-1"]
        assert claim.pid == forger and claim.holder_pid == holder.pid and claim.rank == 0
        holder.do("bye finished")  # the holder's own goodbye passes
        wait_for(lambda: intake.rank_reports.events_received == 1)
        [event] = intake.rank_reports.drain()["job-1"].events
        assert event.pid == holder.pid and event.reason == "finished"
    finally:
        holder.reap()
