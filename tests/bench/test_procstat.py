"""CPU time from /proc: of a process, and of each thread of this one."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import pytest

from bench.procstat import proc_cpu_seconds, stat_cpu_seconds, thread_cpu


def _fake_stat(root: Path, pid: int, comm: str, utime: int, stime: int) -> None:
    # Fields after the command name, as proc(5) numbers them from 3: state ppid pgrp session
    # tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) cutime cstime ...
    rest = ["S", "1", "1", "1", "0", "-1", "4194560", "10", "0", "0", "0",
            str(utime), str(stime), "777", "888", "20", "0", "12", "0", "100"]
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")


def test_cpu_is_utime_plus_stime_over_clock_ticks_ignoring_children(tmp_path: Path) -> None:
    _fake_stat(tmp_path, 4242, "prometheus", utime=1234, stime=66)
    assert proc_cpu_seconds(4242, proc=tmp_path, clk_tck=100) == pytest.approx(13.0)


def test_cpu_reader_survives_spaces_and_parentheses_in_the_command_name(
        tmp_path: Path) -> None:
    _fake_stat(tmp_path, 7, "evil ) 1 2 (name", utime=50, stime=50)
    assert proc_cpu_seconds(7, proc=tmp_path, clk_tck=100) == pytest.approx(1.0)


def test_cpu_of_this_process_grows_while_it_works() -> None:
    before = proc_cpu_seconds(os.getpid())
    x = 0
    while proc_cpu_seconds(os.getpid()) <= before:  # bounded: CPU time must advance
        x = sum(range(100_000)) + x
    assert proc_cpu_seconds(os.getpid()) > before


def test_a_stat_line_gives_its_command_name_too() -> None:
    line = "12 (evil ) 1 2 (name) S " + " ".join(["0"] * 10) + " 30 20 0 0"
    assert stat_cpu_seconds(line, clk_tck=10) == ("evil ) 1 2 (name", pytest.approx(5.0))


def test_thread_cpu_names_this_process_threads_and_counts_a_busy_one() -> None:
    stop = threading.Event()

    def spin() -> None:
        # Python 3.11 leaves a thread's kernel name as the process's: name it as chdb
        # names its threads (PR_SET_NAME), which is what the benchmark groups by.
        ctypes.CDLL(None).prctl(15, b"tg-spin")
        while not stop.is_set():
            sum(range(10_000))

    worker = threading.Thread(target=spin, name="tg-spin")
    before = thread_cpu()
    worker.start()
    # Wait (bounded) until it has spent a clock tick.
    try:
        for _ in range(2_000):
            now = thread_cpu()
            if now.get("tg-spin", 0.0) > 0:
                break
            threading.Event().wait(0.005)
    finally:
        stop.set()
        worker.join()
    assert now.get("tg-spin", 0.0) > 0, now
    assert "tg-spin" not in before
    assert sum(now.values()) > sum(before.values())
