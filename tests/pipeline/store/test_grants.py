"""``infra/clickhouse/grants.sql`` rendered by :mod:`trainguard.pipeline.store.grants`.

The rendering and the SQL's syntax are checked here (chdb parses every statement with
``formatQuery``, the same parser a server uses); what each user may and may not do is
checked on a real server in test_grants_server.py, when one is configured.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from trainguard.errors import ConfigError, StoreError
from trainguard.pipeline.store import ChdbStore
from trainguard.pipeline.store.grants import (
    ACCOUNTS,
    Credential,
    apply_grants,
    grants_template,
    render_grants,
    user_name,
)
from trainguard.pipeline.store.sqltext import first_keyword, split_statements
from trainguard.pipeline.store.url import Secret

PASSWORDS = {a: f"{a}-correct-horse-battery" for a in ACCOUNTS}


def credentials() -> dict[str, Credential]:
    return {a: Credential.from_password(Secret(p)) for a, p in PASSWORDS.items()}


def test_a_credential_is_the_servers_salted_sha256_and_never_the_password() -> None:
    cred = Credential.from_password(Secret("correct-horse-battery"), salt_hex="00ff")
    assert cred.sha256_hex == hashlib.sha256(b"correct-horse-battery00ff").hexdigest()
    fresh = [Credential.from_password(Secret("correct-horse-battery")) for _ in range(2)]
    assert fresh[0].salt_hex != fresh[1].salt_hex and len(fresh[0].salt_hex) == 32


def test_a_short_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="password of 5 characters is too short"):
        Credential.from_password(Secret("short"))


def test_rendered_for_a_database_every_placeholder_is_filled_and_no_password_shows() -> None:
    creds = credentials()
    sql = render_grants("tg_prod", creds, prefix="tgp")
    assert not re.search(r"\{[a-z0-9_]+\}", sql)
    assert "trainguard." not in sql and "{database}" not in sql
    for account, password in PASSWORDS.items():
        assert password not in sql
        assert (f"CREATE USER OR REPLACE tgp_{account}\n    IDENTIFIED WITH sha256_hash BY "
                f"'{creds[account].sha256_hex}' SALT '{creds[account].salt_hex}'") in sql
        assert f"GRANT tgp_{account}_role TO tgp_{account};" in sql


def test_the_grants_give_each_role_only_its_share() -> None:
    statements = split_statements(render_grants("tg", credentials()))
    code = [re.sub(r"(?m)^--.*\n", "", s).strip() for s in statements]
    grants = {s for s in code if first_keyword(s) in ("GRANT", "REVOKE")}
    assert {
        "GRANT ALL ON tg.* TO trainguard_admin_role",
        "GRANT SELECT, INSERT ON tg.* TO trainguard_worker_role",
        "REVOKE INSERT ON tg.silences FROM trainguard_worker_role",
        "REVOKE INSERT ON tg.change_approvals FROM trainguard_worker_role",
        "REVOKE INSERT ON tg.schema_migrations FROM trainguard_worker_role",
        "GRANT SELECT ON tg.* TO trainguard_ro_role",
        "GRANT SELECT ON tg.* TO trainguard_operator_role",
        "GRANT INSERT ON tg.silences TO trainguard_operator_role",
        "GRANT INSERT ON tg.change_approvals TO trainguard_operator_role",
    } < grants
    privileges = {s for s in grants if " ON " in s and not s.startswith("REVOKE ALL")}
    assert len(privileges) == 9  # nothing else is granted on any object
    assert any("SETTINGS PROFILE 'trainguard_ro_profile'" in s for s in code
               if "CREATE USER OR REPLACE trainguard_ro\n" in s)
    assert any("readonly = 1" in s for s in code if "SETTINGS PROFILE" in s)


def test_print_without_every_password_leaves_only_the_missing_placeholders() -> None:
    creds = {"worker": credentials()["worker"]}
    sql = render_grants("tg", creds, partial=True)
    left = set(re.findall(r"\{([a-z0-9_]+)\}", sql))
    assert left == {f"{a}_{k}" for a in ("admin", "ro", "operator") for k in ("sha256", "salt")}
    with pytest.raises(ConfigError, match="no password for account.s. admin, ro, operator"):
        render_grants("tg", creds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"database": "tg; DROP"}, "invalid database name 'tg; DROP'"),
        ({"prefix": "1x"}, "invalid user prefix '1x'"),
        ({"extra": "root"}, "unknown account.s. root"),
        ({"template": "GRANT SELECT ON {database}.* TO {someone};"},
         "unknown placeholder.s.: someone"),
    ],
)
def test_bad_names_are_refused_naming_them(kwargs: dict[str, str], message: str) -> None:
    creds: dict[str, Credential] = credentials()
    if "extra" in kwargs:
        creds[kwargs.pop("extra")] = creds["admin"]
    database = kwargs.pop("database", "tg")
    with pytest.raises(ConfigError, match=message):
        render_grants(database, creds, **kwargs)  # type: ignore[arg-type]


def test_user_names_follow_the_prefix() -> None:
    assert user_name("worker") == "trainguard_worker"
    assert user_name("ro", "tg_test") == "tg_test_ro"
    with pytest.raises(ConfigError, match="unknown account 'grafana'"):
        user_name("grafana")


def test_every_statement_is_valid_clickhouse_syntax(chdb_store: ChdbStore) -> None:
    # formatQuery parses with the server's own parser without running anything.
    statements = split_statements(render_grants("tg", credentials()))
    assert len(statements) == 26
    for statement in statements:
        quoted = statement.replace("\\", "\\\\").replace("'", "\\'")
        formatted = chdb_store.query(f"SELECT formatQuery('{quoted}')").scalar()
        assert first_keyword(str(formatted)) == first_keyword(statement)


def test_apply_refuses_sql_with_placeholders_left() -> None:
    sql = render_grants("tg", {}, partial=True)
    with pytest.raises(ConfigError, match="still has placeholders"):
        apply_grants(None, sql)  # type: ignore[arg-type]  # refused before any store call


def test_the_template_ships_with_the_package() -> None:
    text = grants_template()
    assert "{database}" in text and "IDENTIFIED WITH sha256_hash" in text
    quoted = re.findall(r"(?:BY|SALT) '([^']*)'", text)
    assert len(quoted) == 8 and all(re.fullmatch(r"\{[a-z]+_(sha256|salt)\}", q) for q in quoted)


def test_a_refused_statement_names_its_position_and_first_line() -> None:
    class Refusing:
        database = "tg"

        def __init__(self) -> None:
            self.ran: list[str] = []

        def command(self, sql: str) -> None:
            self.ran.append(sql)
            if len(self.ran) == 3:
                raise StoreError("Code: 497. Not enough privileges. (ACCESS_DENIED)")

    store = Refusing()
    with pytest.raises(StoreError, match=r"grants statement 3/26 \(GRANT ALL ON tg\.\* TO "
                                         r"trainguard_admin_role;?\) failed: .*ACCESS_DENIED"):
        apply_grants(store, render_grants("tg", credentials()))  # type: ignore[arg-type]
