"""``trainguard silence add``: who is the OS user, and integrity silences must be accountable.

Every refusal here comes before a store is opened, so these run in this process and
leave the store directory uncreated (the commands that do open a store are tested in
test_alerts_command.py, each in its own process).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from trainguard.cli import main
from trainguard.cli._common import os_user


def _refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    store_dir = tmp_path / "never-opened"
    assert main(["silence", "add", *argv, "--store", f"chdb://{store_dir}"]) == 2
    assert not store_dir.exists()
    return capsys.readouterr().err


def test_an_integrity_silence_over_a_day_is_refused_naming_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(tmp_path, capsys, "--job", "j", "--duration", "25h", "--integrity",
                   "--reason", "OPS-1")
    assert "refused by the integrity silence rule" in err
    assert "at most 86400 s after its start" in err and "lasts 90000 s" in err


def test_an_integrity_silence_with_a_blank_reason_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(tmp_path, capsys, "--node", "n1", "--duration", "1h", "--integrity",
                   "--reason", "  ")
    assert "integrity silence rule" in err and "has no reason" in err


def test_a_silence_needs_an_expiry_and_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["--job", "j", "--integrity", "--reason", "r"],
                 ["--job", "j", "--integrity", "--duration", "1h"]):
        with pytest.raises(SystemExit) as caught:
            main(["silence", "add", *argv, "--store", f"chdb://{tmp_path / 'x'}"])
        assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "one of the arguments --duration --until is required" in err
    assert "the following arguments are required: --reason" in err


def test_who_cannot_be_given_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["silence", "add", "--job", "j", "--duration", "1h", "--reason", "r",
              "--by", "someone-else"])
    # (``someone-else`` alone would be read as a MATCHER, and refused as one.)
    assert "unrecognized arguments: --by" in capsys.readouterr().err


def test_a_bad_regex_matcher_is_refused_before_the_store_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(tmp_path, capsys, "check=~x[", "--node", "n1", "--duration", "1h",
                   "--reason", "r")
    assert "bad regular expression" in err and err.count("\n") == 1


def test_the_os_user_is_the_real_uid_not_what_the_environment_claims(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    assert os_user() == pwd.getpwuid(os.getuid()).pw_name != "mallory"


def test_a_uid_without_a_passwd_entry_is_recorded_by_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unknown(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", unknown)
    assert os_user() == f"uid:{os.getuid()}"
