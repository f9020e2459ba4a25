"""RankWatch: exits, stops and resumes of the real processes bound to ranks.

Every trainer is a real child process reporting through a real StepReporter to a real
StepIntake; the watch reads the real ``/proc``. Children are not reaped until the test is
done with them, so an exited one is a zombie whose exit status the watch can read.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.agents.trainer_proc import Trainer, wait_for
from trainguard.agents.intake import StepIntake
from trainguard.agents.rank_watch import ProcStat, RankWatch, may_trace_all, read_proc_stat


@pytest.fixture
def intake(sock_path):
    with StepIntake(sock_path) as running:
        yield running


@pytest.fixture
def trainers():
    started: list[Trainer] = []
    yield started
    for t in started:
        if t.proc.poll() is None:
            t.proc.kill()
        t.reap()


def _bound_trainer(intake, trainers, rank=0) -> Trainer:
    trainer = Trainer(intake.socket_path, rank=rank)
    trainers.append(trainer)
    before = intake.steps_received
    trainer.do("step 1")
    wait_for(lambda: intake.steps_received == before + 1)
    return trainer


def _state(pid: int) -> str | None:
    stat = read_proc_stat(pid)
    return stat.state if stat is not None else None


def _watch(intake, **kw):
    got: list = []
    return RankWatch(intake.bindings, lambda job, e: got.append((job, e)), **kw), got


def test_a_sigkilled_rank_is_reported_exited_with_signal_9_and_its_rank_released(
        intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    watch, got = _watch(intake)
    os.kill(trainer.pid, signal.SIGKILL)
    wait_for(lambda: _state(trainer.pid) == "Z")
    assert watch.poll() == got
    [(job, event)] = got
    assert job == "job-1" and event.event == "exited" and event.rank == 0
    assert event.pid == trainer.pid and event.signal == 9 and event.exit_code is None
    assert intake.bindings.bound() == [] and intake.bindings.released == 1
    assert watch.poll() == []  # reported once


def test_a_rank_that_exits_with_code_3_is_reported_with_exit_code_3(intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    watch, got = _watch(intake)
    trainer.exit(3)
    wait_for(lambda: _state(trainer.pid) == "Z")
    watch.poll()
    [(_, event)] = got
    assert event.event == "exited" and event.exit_code == 3 and event.signal is None
    assert trainer.reap() == 3


def test_a_reaped_rank_is_reported_exited_without_a_status(intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    watch, got = _watch(intake)
    trainer.exit(0)
    trainer.reap()
    watch.poll()
    [(_, event)] = got
    assert event.event == "exited" and event.pid == trainer.pid
    assert event.exit_code is None and event.signal is None


def test_a_status_the_kernel_hides_from_another_user_is_not_reported_as_a_clean_exit(
        intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    other_user = os.getuid() + 4242
    watch, got = _watch(intake, euid=other_user, trace_all=False)
    trainer.exit(0)
    wait_for(lambda: _state(trainer.pid) == "Z")
    watch.poll()
    [(_, event)] = got
    assert event.event == "exited" and event.exit_code is None and event.signal is None


def test_the_trainers_own_user_and_group_read_its_exit_status_without_ptrace_rights(
        intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    watch, got = _watch(intake, euid=os.geteuid(), egid=os.getegid(), trace_all=False)
    trainer.exit(5)
    wait_for(lambda: _state(trainer.pid) == "Z")
    watch.poll()
    assert got[0][1].exit_code == 5


def test_ptrace_rights_are_read_from_the_effective_capabilities(tmp_path):
    (tmp_path / "self").mkdir()
    status = tmp_path / "self" / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000080000\n")
    assert may_trace_all(tmp_path)
    status.write_text("Name:\tx\nCapEff:\t000001fffef7ffff\n")  # all but CAP_SYS_PTRACE
    assert not may_trace_all(tmp_path)


def test_a_stopped_rank_is_reported_once_and_resumed_when_continued(intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    watch, got = _watch(intake)
    assert watch.poll() == []
    os.kill(trainer.pid, signal.SIGSTOP)
    wait_for(lambda: _state(trainer.pid) in ("T", "t"))
    for _ in range(3):
        watch.poll()
    assert [e.event for _, e in got] == ["stopped"]
    assert got[0][1].pid == trainer.pid and got[0][1].rank == 0
    os.kill(trainer.pid, signal.SIGCONT)
    wait_for(lambda: _state(trainer.pid) not in ("T", "t"))
    watch.poll()
    watch.poll()
    assert [e.event for _, e in got] == ["stopped", "resumed"]
    trainer.do("step 2")  # it runs again


def test_a_stopped_rank_that_is_killed_is_reported_exited(intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    watch, got = _watch(intake)
    os.kill(trainer.pid, signal.SIGSTOP)
    wait_for(lambda: _state(trainer.pid) in ("T", "t"))
    watch.poll()
    os.kill(trainer.pid, signal.SIGKILL)
    wait_for(lambda: _state(trainer.pid) == "Z")
    watch.poll()
    assert [(e.event, e.signal) for _, e in got] == [("stopped", None), ("exited", 9)]


def test_a_restarted_rank_binds_at_once_while_the_dead_process_is_still_a_zombie(
        intake, trainers):
    old = _bound_trainer(intake, trainers)
    watch, got = _watch(intake)
    old.exit(1)
    wait_for(lambda: _state(old.pid) == "Z")
    new = Trainer(intake.socket_path, rank=0)
    trainers.append(new)
    new.do("step 1")
    # The zombie still looks alive to the bindings: the new process is refused...
    wait_for(lambda: intake.bindings.refused == 1)
    watch.poll()
    assert [(e.event, e.pid, e.exit_code) for _, e in got] == [("exited", old.pid, 1)]
    # ...until the watch saw the exit and released the rank.
    new.do("step 2")
    wait_for(lambda: intake.steps_received == 2)
    [binding] = intake.bindings.bound()
    assert binding.pid == new.pid and binding.rank == 0


def test_ranks_of_several_jobs_are_watched_each_under_its_job(intake, trainers):
    a = Trainer(intake.socket_path, job="job-a", rank=0)
    b = Trainer(intake.socket_path, job="job-b", rank=1)
    trainers.extend([a, b])
    a.do("step 1")
    b.do("step 1")
    wait_for(lambda: intake.steps_received == 2)
    watch, got = _watch(intake)
    os.kill(b.pid, signal.SIGKILL)
    wait_for(lambda: _state(b.pid) == "Z")
    watch.poll()
    assert [(job, e.rank, e.event) for job, e in got] == [("job-b", 1, "exited")]


@pytest.mark.parametrize("pidfd", [True, False])
def test_the_watch_thread_reports_a_kill_on_its_own(intake, trainers, pidfd):
    trainer = _bound_trainer(intake, trainers)
    watch, got = _watch(intake, interval_s=0.02, pidfd=pidfd)
    watch.start()
    try:
        os.kill(trainer.pid, signal.SIGKILL)
        wait_for(lambda: len(got) == 1)
    finally:
        watch.stop()
    assert got[0][1].event == "exited" and got[0][1].signal == 9
    assert watch.events == {"exited": 1}


def test_an_exit_wakes_the_watch_long_before_its_interval(intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    watch, got = _watch(intake, interval_s=60.0)  # only a pidfd can wake it in this test
    watch.start()
    try:
        wait_for(lambda: watch.polls >= 1)
        os.kill(trainer.pid, signal.SIGKILL)
        wait_for(lambda: len(got) == 1, timeout=30.0)
    finally:
        watch.stop()
    assert got[0][1].event == "exited" and got[0][1].signal == 9


def test_a_failing_poll_is_counted_and_the_thread_goes_on(intake, trainers):
    _bound_trainer(intake, trainers)
    calls = []

    def broken(pid, proc):
        calls.append(pid)
        raise RuntimeError("odd /proc")

    watch = RankWatch(intake.bindings, lambda job, e: None, interval_s=0.01, read=broken)
    watch.start()
    try:
        wait_for(lambda: watch.errors >= 2)
    finally:
        watch.stop()
    assert len(calls) >= 2


def _stat_line(pid: int, comm: str, state: str, start: int, exit_code: int) -> str:
    fields = ["0"] * 52
    fields[0], fields[1], fields[2] = str(pid), f"({comm})", state
    fields[21], fields[51] = str(start), str(exit_code)
    return " ".join(fields) + "\n"


def test_read_proc_stat_reads_state_start_and_exit_status_past_an_odd_command_name(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(_stat_line(42, "a) Z (b", "Z", 1234, 9))
    assert read_proc_stat(42, tmp_path) == ProcStat("Z", 1234, 9)
    assert read_proc_stat(43, tmp_path) is None


def test_read_proc_stat_of_a_live_process_is_its_own():
    stat = read_proc_stat(os.getpid())
    assert stat is not None and stat.state in ("R", "S") and stat.start > 0


def test_a_process_proc_hides_but_that_exists_is_not_reported_exited(intake, trainers):
    trainer = _bound_trainer(intake, trainers)
    got: list = []
    watch = RankWatch(intake.bindings, lambda job, e: got.append(e),
                      read=lambda pid, proc: None)  # as under hidepid=2
    watch.poll()
    assert got == [] and watch.hidden == 1 and intake.bindings.bound()[0].pid == trainer.pid
