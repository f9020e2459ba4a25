"""A subprocess owns a chdb directory; this process reads through it."""

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainguard.errors import StoreError
from trainguard.pipeline.store import RemoteReadStore, StoreUrl, open_store
from trainguard.pipeline.store.owner import read_owner

_OWNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from trainguard.pipeline.store import ChdbStore, migrate, serve_reads

    path = Path(sys.argv[1])
    with ChdbStore(path, "owned") as store:
        migrate(store)
        store.insert_rows("dead_letters", [
            {"topic": "t", "partition": 0, "offset": i, "reason": "bad", "message": "m",
             "payload_head": "{}", "payload_size": 2, "ts": 1700000000.0 + i}
            for i in range(3)
        ])
        with serve_reads(store, path):
            print("ready", flush=True)
            sys.stdin.read()  # serve until the test closes our stdin
""")

_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from trainguard.pipeline.store import ChdbStore
    from trainguard.errors import StoreError
    try:
        ChdbStore(Path(sys.argv[1]), "owned")
    except StoreError as exc:
        print(exc)
        sys.exit(3)
""")


@pytest.fixture
def owned_dir(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    path = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready", f"owner exited rc={proc.poll()}"
    yield path, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def _url(path: Path) -> StoreUrl:
    return StoreUrl.parse(f"chdb://{path}?database=owned")


def test_owner_file_names_the_owner_and_is_private(owned_dir):
    path, proc = owned_dir
    doc = json.loads((path / "owner.json").read_text())
    assert doc["pid"] == proc.pid
    assert doc["url"].startswith("http://127.0.0.1:")
    assert doc["started_at"]
    assert (path / "owner.json").stat().st_mode & 0o077 == 0


def test_read_only_open_reads_through_the_owner(owned_dir):
    path, proc = owned_dir
    with open_store(_url(path), read_only=True) as store:
        assert isinstance(store, RemoteReadStore)
        assert store.pid == proc.pid
        result = store.query(
            "SELECT offset, ts FROM {database}.dead_letters FINAL ORDER BY offset"
        )
    assert result.columns == ["offset", "ts"]
    assert result.rows == [
        (0, "2023-11-14 22:13:20.000"),
        (1, "2023-11-14 22:13:21.000"),
        (2, "2023-11-14 22:13:22.000"),
    ]


def test_the_read_endpoint_refuses_writes(owned_dir):
    path, _ = owned_dir
    with open_store(_url(path), read_only=True) as store:
        with pytest.raises(StoreError, match="read-only endpoint: only read statements"):
            store.query("DROP TABLE {database}.dead_letters")
        with pytest.raises(StoreError, match="exactly one statement, got 2"):
            store.query("SELECT 1; DROP TABLE {database}.dead_letters")
        assert store.query("SELECT count() FROM {database}.dead_letters").scalar() == 3


def test_remote_store_refuses_command_and_insert_naming_the_owner(owned_dir):
    path, proc = owned_dir
    with open_store(_url(path), read_only=True) as store:
        owned_by = f"read-only: the embedded store is owned by pid {proc.pid}"
        with pytest.raises(StoreError, match=owned_by):
            store.command("DROP TABLE {database}.dead_letters")
        with pytest.raises(StoreError, match="read-only"):
            store.insert_rows("dead_letters", [{"topic": "x"}])


def test_bad_sql_through_the_owner_is_a_store_error(owned_dir):
    path, _ = owned_dir
    with open_store(_url(path), read_only=True) as store:
        with pytest.raises(StoreError, match="UNKNOWN_TABLE"):
            store.query("SELECT * FROM {database}.nope")


def test_a_request_without_the_token_is_refused(owned_dir):
    path, proc = owned_dir
    owner = read_owner(path)
    assert owner is not None
    store = RemoteReadStore(url=owner.url, database="owned", token="wrong", pid=proc.pid)
    with pytest.raises(StoreError, match="wrong token"):
        store.query("SELECT 1")


def test_opening_an_owned_directory_for_writing_names_the_owner(owned_dir):
    path, proc = owned_dir
    out = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 3, out.stderr
    expected = f"embedded store {path} is already open in another process (pid {proc.pid})"
    assert expected in out.stdout
    assert "only one process may own a chdb directory" in out.stdout


def test_owner_file_is_removed_when_the_owner_stops(owned_dir):
    path, proc = owned_dir
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert not (path / "owner.json").exists()


def test_a_stale_owner_file_is_ignored(chdb_store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner_file = chdb_store.path / "owner.json"
    owner_file.write_text(json.dumps(
        {"pid": dead.pid, "url": "http://127.0.0.1:9", "started_at": "x", "token": "t"}
    ))
    try:
        url = StoreUrl.parse(f"chdb://{chdb_store.path}?database={chdb_store.database}")
        with open_store(url, read_only=True) as store:
            assert not isinstance(store, RemoteReadStore)
            assert store.query("SELECT 1").scalar() == 1
    finally:
        owner_file.unlink()


def test_the_endpoint_takes_operator_rows_and_refuses_the_pipelines_tables(owned_dir):
    path, _ = owned_dir
    with open_store(_url(path), read_only=True) as store:
        store.insert_rows("silences", [{
            "silence_id": "sil-0000beef", "job_id": "j", "node": "", "starts_at": 1.8e9,
            "ends_at": 1.8e9 + 3600, "reason": "reboot", "created_by": "sre",
            "created_at": 1.8e9}])
        assert store.query("SELECT count() FROM {database}.silences").scalar() == 1
        # A client that skips the check is refused by the owner itself.
        with pytest.raises(StoreError, match="only change_approvals, silences may be written"):
            store._request("/insert/dead_letters", b"[]")
        assert store.query("SELECT count() FROM {database}.dead_letters").scalar() == 3
