from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from trainguard.cli import kafka
from trainguard.envvars import KAFKA_DATA_DIR, KAFKA_PORT
from trainguard.local.broker import free_ports

pytestmark = pytest.mark.integration


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="trainguard")
    kafka.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["kafka", *argv])
    code: int = args.func(args)
    return code


def test_options_default_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(KAFKA_DATA_DIR, str(tmp_path))
    monkeypatch.setenv(KAFKA_PORT, "19999")
    assert _run("status") == 1
    assert capsys.readouterr().out == f"kafka not running data_dir={tmp_path.resolve()}\n"


def test_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, _ = free_ports(2)  # the controller takes port + 1
    common = ["--data-dir", str(tmp_path), "--port", str(port)]
    try:
        assert _run("start", *common) == 0
        assert "kafka running pid=" in capsys.readouterr().out
        assert _run("status", *common) == 0
        assert f"bootstrap=127.0.0.1:{port}" in capsys.readouterr().out
    finally:
        assert _run("stop", *common) == 0
    assert capsys.readouterr().out.startswith("kafka stopped pid=")
    assert _run("status", *common) == 1
