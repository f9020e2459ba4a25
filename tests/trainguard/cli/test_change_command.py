"""``trainguard change approve|list|revoke`` against a real embedded store (in subprocesses).

chdb binds a process to one directory, so commands that open a store run in their own
process (helpers from the ``alerts`` command's tests); argument errors are raised before
any store is opened and are tested in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainguard.cli.test_alerts_command import ME, cli, seed
from trainguard.cli import main

FP = "9f3a1c0e52d1b7a4"


@pytest.mark.integration
def test_approve_list_and_revoke_record_who_and_why(tmp_path: Path) -> None:
    store = tmp_path / "store"
    seed(store)
    done = cli(store, "change", "approve", "--job", "llm-7b", "--fingerprint", FP,
               "--reason", "release 2.3, CHG-118")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("approved apr-") and f"by {ME})" in done.stdout
    approval_id = done.stdout.split()[1].rstrip(":")

    listed = json.loads(cli(store, "change", "list", "--json").stdout)["approvals"]
    assert [(a["approval_id"], a["job_id"], a["fingerprint"], a["created_by"], a["revoked"])
            for a in listed] == [(approval_id, "llm-7b", FP, ME, False)]
    table = cli(store, "change", "list", "--job", "llm-7b").stdout
    assert approval_id in table and "in force" in table and "mallory" not in table

    done = cli(store, "change", "revoke", approval_id)
    assert done.returncode == 0, done.stderr
    assert cli(store, "change", "list").stdout.strip() == "no approvals in force"
    assert "revoked" in cli(store, "change", "list", "--all").stdout


@pytest.mark.integration
def test_a_bad_fingerprint_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    seed(store)
    done = cli(store, "change", "approve", "--job", "j", "--fingerprint", "no spaces",
               "--reason", "r")
    assert done.returncode == 2 and "fingerprint 'no spaces' is not a fingerprint" in done.stderr


def test_approve_needs_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["change", "approve", "--job", "j", "--fingerprint", FP])
    assert exc.value.code == 2 and "--reason" in capsys.readouterr().err
