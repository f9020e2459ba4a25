"""Exit status of the CLI: 1 for a failure at run time, 2 for usage or configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainguard import envvars
from trainguard.cli.main import error_text, main
from trainguard.errors import TrainguardError
from trainguard.local.broker import free_port

ROOT = Path(__file__).resolve().parents[3]


def test_a_configuration_error_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--max-jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "max_jobs" in err[0] and err[0].startswith("trainguard worker:")


def test_a_store_that_cannot_be_reached_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/trainguard"
    assert main(["db", "counts", "--store", url]) == 1
    assert "trainguard db: error:" in capsys.readouterr().err


def test_a_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--no-such-flag"])
    assert exit_.value.code == 2


def test_an_unreachable_store_is_one_clean_error_line() -> None:
    # A fresh process: the client libraries are imported (and set their loggers up) while
    # the command runs, as they are for an operator.
    url = f"http://127.0.0.1:{free_port()}/trainguard"
    env = {**os.environ, "PYTHONPATH": str(ROOT), envvars.LOG_LEVEL: "INFO"}

    done = subprocess.run([sys.executable, "-m", "trainguard.cli", "db", "counts", "--store",
                           url], capture_output=True, text=True, env=env, timeout=120)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no library WARNING lines before it
    assert lines[0].startswith("trainguard db: error: cannot reach ClickHouse")
    assert "WARNING" not in done.stderr and " at 0x" not in done.stderr
    assert done.stdout == ""


class _Conn:
    pass


def test_error_text_names_objects_by_their_class_instead_of_their_address() -> None:
    conn = _Conn()
    exc = TrainguardError(f"Max retries exceeded (Caused by NewConnectionError('{conn!r}: "
                          "Failed to establish a new connection: [Errno 111] Connection "
                          f"refused')) via <function connect at 0x7f00beef>")
    assert error_text(exc) == (
        "Max retries exceeded (Caused by NewConnectionError('_Conn: Failed to establish a new "
        "connection: [Errno 111] Connection refused')) via function connect")
