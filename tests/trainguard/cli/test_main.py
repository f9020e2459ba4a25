"""Exit status of the CLI: 1 for a failure at run time, 2 for usage or configuration."""

from __future__ import annotations

import pytest

from trainguard.cli.main import main
from trainguard.local.broker import free_port


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
