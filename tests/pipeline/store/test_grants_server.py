"""The least-privilege users on a real ClickHouse server: each can do its job and no more.

Runs when TRAINGUARD_TEST_CLICKHOUSE_URL names a server (23.8 or later) whose user has
ACCESS MANAGEMENT (e.g. ``default``; its password from TRAINGUARD_CLICKHOUSE_PASSWORD);
skipped otherwise. Users, roles and the database get a unique name per test and are
dropped after it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from trainguard import envvars
from trainguard.errors import StoreError
from trainguard.pipeline.alerts.silences import active_silences, add_silence
from trainguard.pipeline.store import Secret, StoreUrl, migrate, tables
from trainguard.pipeline.store.grants import ACCOUNTS, Credential, apply_grants, render_grants
from trainguard.pipeline.store.server_store import ServerStore

T0 = 1_700_000_000.0
_STEP = {"cluster": "c", "job_id": "j", "step": 1, "rank": 0, "world_size": 1, "node": "n",
         "ts": T0, "loss": 2.5, "param_checksum": "", "env_fingerprint": ""}


@dataclass
class Server:
    """The superuser's URL, and the unique database and prefix of this test."""

    base: StoreUrl
    database: str
    prefix: str

    def url(self, account: str | None = None) -> StoreUrl:
        if account is None:
            return replace(self.base, database=self.database)
        return replace(self.base, database=self.database, user=f"{self.prefix}_{account}",
                       password=Secret(_password(account)))


def _password(account: str) -> str:
    return f"{account}-Test-password-1"


@pytest.fixture
def server() -> Iterator[Server]:
    raw = os.environ.get(envvars.TEST_CLICKHOUSE_URL)
    if not raw:
        pytest.skip(f"set {envvars.TEST_CLICKHOUSE_URL} to test against a ClickHouse server")
    password = os.environ.get(envvars.CLICKHOUSE_PASSWORD)
    tag = uuid.uuid4().hex[:10]
    srv = Server(StoreUrl.parse(raw, Secret(password) if password else None),
                 database=f"tg_grants_{tag}", prefix=f"tg_{tag}")
    creds = {a: Credential.from_password(Secret(_password(a))) for a in ACCOUNTS}
    with ServerStore(srv.url()) as root:
        apply_grants(root, render_grants(srv.database, creds, prefix=srv.prefix))
        try:
            yield srv
        finally:
            for account in ACCOUNTS:
                root.command(f"DROP USER IF EXISTS {srv.prefix}_{account}")
                root.command(f"DROP ROLE IF EXISTS {srv.prefix}_{account}_role")
            root.command(f"DROP SETTINGS PROFILE IF EXISTS {srv.prefix}_ro_profile")
            root.command("DROP DATABASE IF EXISTS {database}")


def _refused(action: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(StoreError) as caught:
        action(*args, **kwargs)
    return str(caught.value)


def test_each_user_can_do_its_job_and_no_more(server: Server) -> None:
    with ServerStore(server.url("admin")) as admin:
        assert migrate(admin)  # only the admin changes the schema
        assert "silences" in tables(admin)

    with ServerStore(server.url("worker")) as worker:
        assert migrate(worker) == []  # up to date: no DDL needed, none attempted
        worker.insert_rows("steps", [_STEP])
        assert int(worker.query("SELECT count() FROM {database}.steps").scalar()) == 1
        assert "ACCESS_DENIED" in _refused(
            add_silence, worker, job_id="j", node=None, starts_at=T0, ends_at=T0 + 60,
            reason="r", created_by="w", now=T0)
        for sql in ("DROP TABLE {database}.findings", "TRUNCATE TABLE {database}.alerts",
                    "ALTER TABLE {database}.steps DELETE WHERE 1",
                    "CREATE TABLE {database}.x (a UInt8) ENGINE = Memory"):
            assert "ACCESS_DENIED" in _refused(worker.command, sql), sql

    with ServerStore(server.url("operator")) as operator:
        silence = add_silence(operator, job_id="j", node=None, starts_at=T0,
                              ends_at=4e9, reason="OPS-1", created_by="alice", now=T0)
        assert active_silences(operator, T0) == [silence]
        assert "ACCESS_DENIED" in _refused(operator.insert_rows, "steps", [_STEP])
        assert "ACCESS_DENIED" in _refused(operator.command, "DROP TABLE {database}.silences")

    with ServerStore(server.url("ro")) as ro:
        assert int(ro.query("SELECT count() FROM {database}.steps").scalar()) == 1
        assert int(ro.query("SELECT count() FROM {database}.silences SETTINGS "
                            "max_execution_time = 30").scalar()) == 1  # as Grafana sends it
        refused = _refused(ro.insert_rows, "steps", [_STEP])
        assert "readonly" in refused.lower() or "ACCESS_DENIED" in refused
        assert "ACCESS_DENIED" in _refused(ro.query, "SELECT * FROM system.users")


def test_a_worker_cannot_migrate_a_store_that_needs_it(server: Server) -> None:
    with ServerStore(server.url()) as root:  # the database exists, no tables yet
        assert tables(root) == []
    with ServerStore(server.url("worker")) as worker:
        assert "run `trainguard db migrate" in _refused(migrate, worker)
