"""CPU time from ``/proc``: of a process (all its threads) or of each thread of this one.

The benchmarks measure CPU the way ``top`` does, from the kernel's own accounting: utime
plus stime of ``/proc/<pid>/stat`` (or of ``/proc/self/task/<tid>/stat``), in clock ticks.
Children's CPU (cutime, cstime) is not counted: each process is measured on its own.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

__all__ = ["CLK_TCK", "proc_cpu_seconds", "stat_cpu_seconds", "thread_cpu"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_cpu_seconds(text: str, clk_tck: int = CLK_TCK) -> tuple[str, float]:
    """``(command name, CPU seconds)`` of one ``stat`` line (utime + stime).

    The command name (field 2) may hold spaces and parentheses, so fields are counted from
    the last ``)``: utime and stime are fields 14 and 15 of the line.
    """
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    return head[head.index("(") + 1:], (int(fields[11]) + int(fields[12])) / clk_tck


def proc_cpu_seconds(pid: int, proc: Path = Path("/proc"), clk_tck: int = CLK_TCK) -> float:
    """CPU seconds (utime + stime, all threads) of process ``pid`` from ``<proc>/<pid>/stat``."""
    return stat_cpu_seconds((proc / str(pid) / "stat").read_text(), clk_tck)[1]


def thread_cpu(proc: Path = Path("/proc")) -> dict[str, float]:
    """CPU seconds of this process's threads so far, summed by thread name."""
    out: dict[str, float] = collections.defaultdict(float)
    tasks = proc / "self" / "task"
    for tid in os.listdir(tasks):
        try:
            text = (tasks / tid / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile: its CPU is lost to both reads
            continue
        name, seconds = stat_cpu_seconds(text)
        out[name] += seconds
    return dict(out)
