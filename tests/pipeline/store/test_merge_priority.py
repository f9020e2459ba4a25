"""Merge threads at a lower priority: real threads of this process, renamed as chdb's are.

The threads here take a name of their own (``_NAME``): chdb's real merge threads may run in
this process (other tests open stores), and they are neither counted nor changed here.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainguard.pipeline.store.merge_priority import MERGE_THREADS, MergePriority, renice_threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="per-thread nice through /proc and setpriority: Linux")

_PR_SET_NAME = 15
#: The kernel keeps 15 bytes of a thread's name.
_NAME = "tgTestMerge"
_NAMES = frozenset({_NAME})


def _named_thread(name: bytes) -> Iterator[int]:
    """A thread whose kernel name is ``name`` (as ClickHouse names its own); yields its id."""
    ready, done = threading.Event(), threading.Event()
    tid: list[int] = []

    def body() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
        tid.append(threading.get_native_id())
        ready.set()
        done.wait(30)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield tid[0]
    finally:
        done.set()
        thread.join(10)


@pytest.fixture
def merge_thread() -> Iterator[int]:
    yield from _named_thread(_NAME.encode())


@pytest.fixture
def other_thread() -> Iterator[int]:
    yield from _named_thread(b"QueryPipelineEx")


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_only_the_merge_threads_are_lowered(merge_thread: int, other_thread: int) -> None:
    before_main, before_other = _nice(threading.get_native_id()), _nice(other_thread)
    assert "MergeMutate" in MERGE_THREADS
    found, changed = renice_threads(_NAMES, 19)
    assert (found, changed) == (1, 1)
    assert _nice(merge_thread) == 19
    assert _nice(other_thread) == before_other  # the store's other threads, the loop: as were
    assert _nice(threading.get_native_id()) == before_main
    assert renice_threads(_NAMES, 19) == (1, 0)  # already there: nothing to change


def test_the_keeper_lowers_threads_that_appear_later_and_counts_them(
        merge_thread: int) -> None:
    keeper = MergePriority(12, names=_NAMES)
    assert keeper.apply() == 1 and keeper.changed == 1 and _nice(merge_thread) == 12
    for later in _named_thread(_NAME.encode()):  # a merge thread started after the first call
        assert keeper.apply() == 2 and keeper.changed == 2 and _nice(later) == 12


def test_nice_zero_changes_nothing(merge_thread: int) -> None:
    before = _nice(merge_thread)
    assert MergePriority(0, names=_NAMES).apply() == 0
    assert _nice(merge_thread) == before


def test_a_platform_without_task_ids_is_left_alone_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keeper = MergePriority(19, tasks=tmp_path / "missing")
    assert keeper.apply() == 0 and keeper.failed
    assert "store merge priority left as is" in caplog.text
    assert keeper.apply() == 0  # not retried on every probe


def test_a_task_that_ends_midway_is_skipped(tmp_path: Path) -> None:
    for tid, comm in (("101", "MergeMutate"), ("102", "MergeMutate"), ("self", "x")):
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "comm").write_text(comm + "\n")
    set_calls: list[tuple[int, int]] = []

    def get(which: int, tid: int) -> int:
        if tid == 102:
            raise ProcessLookupError(tid)  # it ended between the listing and the call
        return 0

    found, changed = renice_threads(MERGE_THREADS, 19, tasks=tmp_path, get=get,
                                    set_=lambda which, tid, nice: set_calls.append((tid, nice)))
    assert (found, changed) == (2, 1) and set_calls == [(101, 19)]


def test_a_nice_the_worker_may_not_set_is_logged_once_not_skipped_in_silence(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "101").mkdir()
    (tmp_path / "101" / "comm").write_text("MergeMutate\n")

    def refuse(which: int, tid: int, nice: int) -> None:
        raise PermissionError(1, "Operation not permitted")  # below the worker's own nice

    with pytest.raises(PermissionError):
        renice_threads(MERGE_THREADS, 5, tasks=tmp_path, get=lambda which, tid: 10,
                       set_=refuse)
    monkeypatch.setattr(os, "getpriority", lambda which, tid: 10)
    monkeypatch.setattr(os, "setpriority", refuse)
    keeper = MergePriority(5, tasks=tmp_path)
    assert keeper.apply() == 0 and keeper.failed
    assert keeper.apply() == 0  # not tried again
    assert caplog.text.count("store merge priority left as is") == 1
    assert "Operation not permitted" in caplog.text


@pytest.mark.parametrize("nice", [-1, 20])
def test_a_nice_out_of_range_is_refused(nice: int) -> None:
    with pytest.raises(ValueError, match=f"got {nice}"):
        MergePriority(nice)
    with pytest.raises(ValueError, match=f"got {nice}"):
        renice_threads(MERGE_THREADS, nice)


def test_chdbs_own_merge_threads_go_by_that_name_and_are_lowered(tmp_path: Path) -> None:
    # In a process of its own, as the worker: open the embedded store, then lower them.
    script = (
        "import os, sys\n"
        "from trainguard.pipeline.store import StoreUrl, migrate, open_store\n"
        "from trainguard.pipeline.store.merge_priority import MergePriority\n"
        "store = open_store(StoreUrl.parse('chdb://' + sys.argv[1]))\n"
        "migrate(store)\n"
        "keeper = MergePriority(19)\n"
        "found = keeper.apply()\n"
        "tasks = '/proc/self/task'\n"
        "nices = sorted({os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(tasks)\n"
        "                if open(f'{tasks}/{t}/comm').read().strip() == 'MergeMutate'})\n"
        "main = os.getpriority(os.PRIO_PROCESS, os.getpid())\n"
        "print(found, keeper.changed, nices, main)\n"
        "store.close()\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found, changed, nices, main = done.stdout.split(maxsplit=3)
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # the child starts at this test's nice
    assert int(found) >= 1 and int(changed) == (int(found) if ours < 19 else 0)
    assert nices.strip() == "[19]" and int(main) == ours  # the worker's own threads: as were
