"""Arrow blocks go to the embedded engine as files it reads without the GIL; nothing is left."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from trainguard.pipeline.store import ChdbStore, arrow_files
from trainguard.pipeline.store.arrow_files import ArrowFiles, BlockWriteError, block_dir

_TABLE = ("CREATE TABLE {database}.t (k UInt32, name String, x Nullable(Float32), "
          "tags Array(UInt16), ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
          "ENGINE = ReplacingMergeTree(ingested_at) ORDER BY k")


def test_a_block_is_an_arrow_stream_in_a_private_directory_removed_after_use(
        tmp_path: Path) -> None:
    files = ArrowFiles(tmp_path)
    data = pa.table({"k": pa.array([1, 2], pa.uint32()), "name": ["a", None]})
    with files.block(data) as path:
        assert pa.ipc.open_stream(path).read_all().equals(data)
        directory = Path(path).parent
        assert directory.parent == tmp_path and stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert not Path(path).exists()
    with files.block(data) as second:
        assert second != path  # a new name each time
    files.close()
    assert not directory.exists()


def test_a_block_that_cannot_be_written_is_a_block_write_error(tmp_path: Path) -> None:
    files = ArrowFiles(tmp_path / "missing")
    with pytest.raises(BlockWriteError, match="cannot make an Arrow block directory"), \
            files.block(pa.table({"k": [1]})):
        pass


def test_blocks_go_to_shared_memory_else_to_a_plain_temp_dir(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             ) -> None:
    assert block_dir(tmp_path) == tmp_path
    monkeypatch.setattr(arrow_files.tempfile, "gettempdir", lambda: "/tmp/plain-dir")
    assert block_dir(tmp_path / "no-shm") == Path("/tmp/plain-dir")
    # file() reads *, ?, {..} and [..] as patterns and ' as the end of its argument.
    monkeypatch.setattr(arrow_files.tempfile, "gettempdir", lambda: "/tmp/it's{a,b}")
    assert block_dir(tmp_path / "no-shm") is None


def _insert_two_shapes(store: ChdbStore) -> list[tuple]:
    store.command(_TABLE)
    store.insert_arrow("t", pa.table({"k": pa.array([2, 1], pa.uint32()), "name": ["b", "a"],
                                      "x": pa.array([0.5, None], pa.float32())}))
    # Right after, another shape: the file's own schema is read, never a cached one.
    store.insert_arrow("t", pa.table({"tags": pa.array([[7, 8]], pa.list_(pa.uint16())),
                                      "k": pa.array([3], pa.uint32()), "name": ["c"]}))
    return store.query("SELECT k, name, x, tags FROM {database}.t ORDER BY k").rows


EXPECTED = [(1, "a", None, []), (2, "b", 0.5, []), (3, "c", None, [7, 8])]


def test_arrow_inserts_through_files_store_each_block_and_leave_no_file(
        chdb_store: ChdbStore) -> None:
    shared = chdb_store._shared
    assert shared is not None and shared.files is not None  # /dev/shm or the temp dir
    assert _insert_two_shapes(chdb_store) == EXPECTED
    directory = shared.files._dir
    assert directory is not None and list(directory.iterdir()) == []


def test_without_a_block_directory_arrow_inserts_go_through_python(
        chdb_store: ChdbStore, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = chdb_store._shared
    assert shared is not None
    monkeypatch.setattr(shared, "files", None)
    assert _insert_two_shapes(chdb_store) == EXPECTED


def test_a_block_that_cannot_be_written_goes_through_python_and_is_counted(
        chdb_store: ChdbStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = chdb_store._shared
    assert shared is not None
    broken = ArrowFiles(tmp_path / "gone")  # its directory cannot be made
    monkeypatch.setattr(shared, "files", broken)
    assert _insert_two_shapes(chdb_store) == EXPECTED
    assert broken.failures == 2


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_killed_workers_directory_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """A SIGKILLed worker leaves its directory in /dev/shm (memory): the next one sweeps it."""
    old = arrow_files.STALE_S + 60
    dead = tmp_path / f"trainguard-arrow-{_dead_pid()}-abc"
    recent = tmp_path / f"trainguard-arrow-{_dead_pid()}-def"  # dead, but touched lately
    live = tmp_path / f"trainguard-arrow-{os.getppid()}-ghi"
    other = tmp_path / "trainguard-arrow-notapid"
    for path in (dead, recent, live, other):
        path.mkdir()
        (path / "block-0.arrows").write_bytes(b"x")
    for path in (dead, live, other):
        os.utime(path, (path.stat().st_mtime - old,) * 2)
    files = ArrowFiles(tmp_path)
    with files.block(pa.table({"k": [1]})) as block:
        assert Path(block).parent.name.startswith(f"trainguard-arrow-{os.getpid()}-")
    assert not dead.exists()
    assert recent.exists() and live.exists() and other.exists()
    files.close()
    assert arrow_files.sweep_dead(tmp_path) == 0  # nothing else is old and dead
