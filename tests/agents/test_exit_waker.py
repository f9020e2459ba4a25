"""ExitWaker: a real process's exit wakes the waiting thread through its pidfd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from trainguard.agents.exit_waker import ExitWaker


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    assert proc.stdin is not None
    proc.stdin.close()


@pytest.fixture
def waker():
    w = ExitWaker()
    yield w
    w.close()


def test_a_watched_process_that_exits_wakes_the_wait(waker, child):
    waker.watch([child.pid])
    assert waker.pidfds
    assert not waker.wait(0)  # alive: nothing to report
    os.kill(child.pid, signal.SIGKILL)
    assert waker.wait(30.0)
    assert not waker.wait(0)  # reported once: no busy loop while its rank is released
    assert child.poll() == -signal.SIGKILL  # still a zombie until here


def test_interrupt_wakes_the_wait_from_another_thread(waker):
    timer = threading.Timer(0.05, waker.interrupt)
    timer.start()
    assert waker.wait(30.0) is False
    timer.join()


def test_processes_no_longer_watched_are_closed_and_gone_ones_ignored(waker, child):
    waker.watch([child.pid, 2**22 + 12345])  # the second pid does not exist
    waker.watch([])
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert not waker.wait(0)


def test_without_pidfds_it_only_sleeps(child):
    waker = ExitWaker(use_pidfd=False)
    try:
        waker.watch([child.pid])
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert not waker.wait(0.01)
    finally:
        waker.close()
