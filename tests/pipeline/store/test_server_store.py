"""ServerStore: against a real ClickHouse server when TRAINGUARD_TEST_CLICKHOUSE_URL is set.

Without a server, the same code runs over clickhouse-connect's embedded chdb interface in
a subprocess (its own chdb directory), which exercises the client calls but not HTTP.
"""

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from trainguard import envvars
from trainguard.errors import StoreError
from trainguard.pipeline.store import Secret, StoreUrl, default_sql_dir, migrate, row_counts
from trainguard.pipeline.store.server_store import ServerStore

_STEP = {"cluster": "c", "job_id": "j", "step": 1, "rank": 0, "world_size": 1, "node": "n",
         "ts": 1700000000.0, "loss": 2.5, "param_checksum": "", "env_fingerprint": ""}

_OVER_CHDB = textwrap.dedent(f"""
    import sys
    import clickhouse_connect
    from trainguard.pipeline.store import StoreUrl, default_sql_dir, migrate, row_counts
    from trainguard.pipeline.store.server_store import ServerStore

    client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
    with ServerStore(StoreUrl.parse("http://localhost/over_chdb"), client=client) as store:
        assert len(migrate(store)) == len(list(default_sql_dir().glob("*.sql")))
        assert migrate(store) == []
        store.insert_rows("steps", [{_STEP!r}] * 2)
        assert row_counts(store)["steps"] == 1, row_counts(store)
        rows = store.query("SELECT job_id, ts, loss FROM {{database}}.steps FINAL;").rows
        assert rows == [("j", "2023-11-14 22:13:20.000", 2.5)], rows
        import pyarrow as pa
        store.insert_arrow("steps", pa.table({{"job_id": ["k"], "step": [2], "rank": [1],
                                               "world_size": [2], "node": ["n"],
                                               "ts": [1700000000.5], "loss": [None]}}))
        rows = store.query("SELECT rank, ts, loss FROM {{database}}.steps WHERE job_id = 'k'").rows
        assert rows == [(1, "2023-11-14 22:13:20.500", None)], rows
    print("ok")
""")


def test_server_store_runs_over_clickhouse_connect(tmp_path):
    out = subprocess.run([sys.executable, "-c", _OVER_CHDB, str(tmp_path / "cc")],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_an_unreachable_server_is_a_store_error_naming_host_and_port():
    with pytest.raises(StoreError, match="127.0.0.1:9"):
        ServerStore(StoreUrl.parse("http://127.0.0.1:9/db"))


@pytest.fixture
def server_store():
    raw = os.environ.get(envvars.TEST_CLICKHOUSE_URL)
    if not raw:
        pytest.skip(f"set {envvars.TEST_CLICKHOUSE_URL} to test against a ClickHouse server")
    password = os.environ.get(envvars.CLICKHOUSE_PASSWORD)
    base = StoreUrl.parse(raw, Secret(password) if password else None)
    url = StoreUrl(scheme=base.scheme, database=f"tg_test_{uuid.uuid4().hex[:12]}",
                   host=base.host, port=base.port, user=base.user, password=base.password)
    store = ServerStore(url)
    yield store
    store.command("DROP DATABASE IF EXISTS {database}")
    store.close()


def test_migrate_insert_and_count_on_a_server(server_store):
    assert len(migrate(server_store)) == len(list(default_sql_dir().glob("*.sql")))
    assert migrate(server_store) == []
    server_store.insert_rows("steps", [_STEP])
    server_store.insert_rows("steps", [_STEP])
    assert row_counts(server_store)["steps"] == 1


class _RefusingClient:
    """A clickhouse-connect client whose inserts fail with the given driver error."""

    def __init__(self, error):
        self.error, self.database = error, None

    def command(self, sql):
        return None

    def raw_query(self, sql, fmt=None):
        return b'{"meta": [{"name": "count()"}], "data": [["1"]]}'  # the database exists

    def raw_insert(self, *args, **kwargs):
        raise self.error


def test_an_insert_the_server_refuses_for_its_data_is_a_store_data_error():
    from clickhouse_connect.driver.exceptions import DatabaseError

    from trainguard.pipeline.store.errors import StoreDataError

    refused = DatabaseError("HTTPDriver received ClickHouse error code 27\n Code: 27. "
                            "DB::Exception: Cannot parse input: expected '\"' before: 'zz'")
    store = ServerStore(StoreUrl.parse("http://db.example:8123/x"),
                        client=_RefusingClient(refused))
    with pytest.raises(StoreDataError, match="(?s)db.example:8123.*Cannot parse input"):
        store.insert_rows("steps", [_STEP])


def test_a_server_that_cannot_be_reached_is_not_a_data_error():
    from clickhouse_connect.driver.exceptions import OperationalError

    from trainguard.pipeline.store.errors import StoreDataError

    store = ServerStore(StoreUrl.parse("http://db.example:8123/x"),
                        client=_RefusingClient(OperationalError("connection refused")))
    with pytest.raises(StoreError, match="cannot reach ClickHouse") as caught:
        store.insert_rows("steps", [_STEP])
    assert not isinstance(caught.value, StoreDataError)


class _Recording:
    """A client that answers whether the database exists and records the statements."""

    def __init__(self, exists: bool) -> None:
        self.exists, self.commands, self.database = exists, [], None

    def command(self, sql):
        self.commands.append(sql)

    def raw_query(self, sql, fmt=None):
        return b'{"meta": [{"name": "c"}], "data": [["%d"]]}' % self.exists


@pytest.mark.parametrize("exists", [True, False])
def test_the_database_is_created_only_when_missing(exists):
    # A least-privilege user may not run CREATE DATABASE, not even with IF NOT EXISTS.
    client = _Recording(exists)
    ServerStore(StoreUrl.parse("http://db.example:8123/tg"), client=client)
    assert client.commands == ([] if exists else ["CREATE DATABASE IF NOT EXISTS tg"])
    assert client.database == "tg"
