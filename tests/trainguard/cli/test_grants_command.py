"""``trainguard db grants``: passwords from files or the environment, only hashes printed.

None of these opens a store (``--print`` renders only; the ``--apply`` refusals come
first), so they run in this process. Applying on a server is tested in
tests/pipeline/store/test_grants_server.py.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from trainguard.cli import main
from trainguard.cli.grants import PASSWORD_ENV

PASSWORDS = {a: f"{a}-pw-from-somewhere-safe" for a in PASSWORD_ENV}


@pytest.fixture
def env_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    for account, env in PASSWORD_ENV.items():
        monkeypatch.setenv(env, PASSWORDS[account])


def _hashes(sql: str) -> dict[str, tuple[str, str]]:
    found = re.findall(r"CREATE USER OR REPLACE (\w+)\n\s+IDENTIFIED WITH sha256_hash BY "
                       r"'([0-9a-f]+)' SALT '([0-9a-f]+)'", sql)
    return {user: (digest, salt) for user, digest, salt in found}


def test_print_renders_for_the_stores_database_with_hashes_of_the_env_passwords(
    env_passwords: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "grants", "--print", "--store", "http://ch.example:8123/tg_prod"]) == 0
    sql = capsys.readouterr().out
    assert "GRANT SELECT ON tg_prod.* TO trainguard_ro_role;" in sql
    hashes = _hashes(sql)
    assert set(hashes) == {f"trainguard_{a}" for a in PASSWORD_ENV}
    for account, password in PASSWORDS.items():
        assert password not in sql
        digest, salt = hashes[f"trainguard_{account}"]
        assert digest == hashlib.sha256((password + salt).encode()).hexdigest()


def test_a_password_file_wins_over_the_environment(
    env_passwords: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "worker.pw"
    secret.write_text("worker-password-from-a-file\nignored second line\n")
    assert main(["db", "grants", "--print", "--prefix", "tgx", "--password-file",
                 f"worker={secret}", "--store", "chdb://unused"]) == 0
    digest, salt = _hashes(capsys.readouterr().out)["tgx_worker"]
    assert digest == hashlib.sha256(f"worker-password-from-a-file{salt}".encode()).hexdigest()


def test_print_without_passwords_keeps_placeholders_and_says_which(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for env in PASSWORD_ENV.values():
        monkeypatch.delenv(env, raising=False)
    assert main(["db", "grants", "--print", "--store", "chdb://unused"]) == 0
    out, err = capsys.readouterr()
    assert "'{worker_sha256}' SALT '{worker_salt}'" in out
    assert "no password for admin, worker, ro, operator" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--apply", "--store", "chdb://somewhere"], "is the embedded engine, which has no users"),
        (["--apply", "--store", "http://ch.example:8123/tg"], "no password for account(s) "),
        (["--print", "--password-file", "root=/etc/passwd"], "expected ACCOUNT=PATH"),
        (["--print", "--password-file", "ro=/nonexistent/pw"], "cannot read /nonexistent/pw"),
    ],
)
def test_bad_requests_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
    message: str,
) -> None:
    for env in PASSWORD_ENV.values():
        monkeypatch.delenv(env, raising=False)
    assert main(["db", "grants", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_short_password_names_its_account(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(PASSWORD_ENV["operator"], "short")
    assert main(["db", "grants", "--print", "--store", "chdb://unused"]) == 2
    assert "account operator: password of 5 characters is too short" in capsys.readouterr().err
