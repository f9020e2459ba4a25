"""Which checkpoint files are ready to hash: closed after writing (inotify) or stable (scan)."""

import os

import pytest

from trainguard.agents.collectors.closed_files import ClosedFiles
from trainguard.agents.collectors.file_hash import identity
from trainguard.agents.collectors.inotify import inotify_available

needs_inotify = pytest.mark.skipif(not inotify_available(), reason="inotify is Linux-only")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _watch(tmp_path, *, inotify, clock=None, **kw):
    files = ClosedFiles([tmp_path], use_inotify=inotify, scan_interval_s=5.0,
                        wait=lambda s: None, clock=clock or Clock(), **kw)
    files.start()
    return files


@needs_inotify
def test_a_file_closed_after_writing_is_ready_at_once(tmp_path):
    files = _watch(tmp_path, inotify=True)
    assert files.mode == "inotify"
    with open(tmp_path / "rank-0.pt", "wb") as f:
        f.write(b"weights")
        assert files.ready(0) == []  # still open
    assert files.ready(1.0) == [tmp_path / "rank-0.pt"]
    files.stop()


@needs_inotify
def test_a_file_renamed_in_is_ready_and_its_temporary_name_is_not_a_checkpoint(tmp_path):
    files = _watch(tmp_path, inotify=True, exclude=("*.tmp",))
    (tmp_path / "rank-0.pt.tmp").write_bytes(b"weights")
    os.rename(tmp_path / "rank-0.pt.tmp", tmp_path / "rank-0.pt")
    assert files.ready(1.0) == [tmp_path / "rank-0.pt"]
    files.stop()


@needs_inotify
def test_a_version_already_hashed_is_not_handed_out_again(tmp_path):
    files = _watch(tmp_path, inotify=True)
    path = tmp_path / "rank-0.pt"
    path.write_bytes(b"weights")
    assert files.ready(1.0) == [path]
    files.hashed(path, identity(os.lstat(path)))
    with open(path, "ab"):
        pass  # opened for writing and closed, nothing written
    assert files.ready(0.2) == []
    files.stop()


@needs_inotify
def test_files_in_a_new_directory_are_watched_and_those_before_its_watch_settle(tmp_path):
    clock = Clock()
    files = _watch(tmp_path, inotify=True, clock=clock)
    step = tmp_path / "step-100"
    step.mkdir()
    assert files.ready(1.0) == []  # the new directory is now watched
    (step / "rank-1.pt").write_bytes(b"one")
    assert files.ready(1.0) == [step / "rank-1.pt"]
    files.stop()


def test_a_scan_hands_out_a_new_file_once_it_is_the_same_in_two_scans(tmp_path):
    clock = Clock()
    (tmp_path / "old.pt").write_bytes(b"there before the agent")
    files = _watch(tmp_path, inotify=False, clock=clock)
    assert files.mode == "scan"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.pt").write_bytes(b"new")
    clock.now = 5.0
    assert files.ready(0) == []  # seen once
    clock.now = 10.0
    assert files.ready(0) == [tmp_path / "sub" / "new.pt"]
    files.hashed(tmp_path / "sub" / "new.pt", identity(os.lstat(tmp_path / "sub" / "new.pt")))
    clock.now = 15.0
    assert files.ready(0) == []


def test_a_scan_waits_while_a_file_still_grows(tmp_path):
    clock = Clock()
    files = _watch(tmp_path, inotify=False, clock=clock)
    path = tmp_path / "growing.pt"
    for i in range(1, 4):
        with open(path, "ab") as f:
            f.write(b"x" * i)
        clock.now = 5.0 * i
        assert files.ready(0) == []
    clock.now = 20.0
    assert files.ready(0) == [path]


def test_files_beyond_the_cap_are_counted(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.pt").write_bytes(b"x")
    files = _watch(tmp_path, inotify=False, max_files=2)
    assert files.untracked == 1


@needs_inotify
def test_a_checkpoint_directory_created_after_the_start_is_watched_from_the_next_scan(tmp_path):
    clock = Clock()
    ckpt = tmp_path / "ckpt"
    files = ClosedFiles([ckpt], use_inotify=True, scan_interval_s=5.0, wait=lambda s: None,
                        clock=clock)
    files.start()
    assert files.mode == "inotify"
    ckpt.mkdir()
    clock.now = 5.0
    assert files.ready(0) == []  # the scan finds the directory and watches it
    (ckpt / "rank-0.pt").write_bytes(b"w")
    assert files.ready(1.0) == [ckpt / "rank-0.pt"]
    files.stop()
