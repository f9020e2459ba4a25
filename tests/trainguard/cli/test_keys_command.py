"""``trainguard keys``: init, enrol, rotate and show, from files only, printing no secret."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trainguard.cli.main import build_parser, main
from trainguard.cli.worker import worker_config
from trainguard.pipeline.config import WorkerConfig
from trainguard.schemas.auth import derive_node_key
from trainguard.schemas.keyfiles import read_fleet_secrets, read_node_key


def test_init_enrol_rotate_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet.json"
    flag = ["--fleet-secret-file", str(fleet)]
    assert main(["keys", "init", *flag]) == 0
    [first] = read_fleet_secrets(fleet)
    out = tmp_path / "a.key"
    assert main(["keys", "enrol", *flag, "--node", "node-a", "--out", str(out)]) == 0
    assert read_node_key(out).key == derive_node_key(first, "node-a").key
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert main(["keys", "rotate", *flag]) == 0
    new, previous = read_fleet_secrets(fleet)
    assert previous == first
    assert main(["keys", "show", *flag]) == 0
    printed = capsys.readouterr().out
    assert f"current kid={new.kid}" in printed and f"previous kid={first.kid}" in printed
    assert first.secret.hex() not in printed and new.secret.hex() not in printed
    assert main(["keys", "show", *flag, "--json"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == {"file": str(fleet), "current": new.kid,
                                   "previous": first.kid}
    assert first.secret.hex() not in printed and new.secret.hex() not in printed


def test_init_refuses_to_overwrite_and_enrol_refuses_a_bad_node_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flag = ["--fleet-secret-file", str(tmp_path / "fleet.json")]
    assert main(["keys", "init", *flag]) == 0
    assert main(["keys", "init", *flag]) == 2
    assert main(["keys", "enrol", *flag, "--node", "bad name", "--out",
                 str(tmp_path / "x")]) == 2
    assert "bad node name 'bad name'" in capsys.readouterr().err


def test_the_fleet_secret_file_comes_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINGUARD_FLEET_SECRET_FILE", str(tmp_path / "env.json"))
    assert main(["keys", "init"]) == 0
    assert (tmp_path / "env.json").exists()


def _worker(*flags: str) -> WorkerConfig:
    config = worker_config(build_parser().parse_args(["worker", *flags]))
    assert isinstance(config, WorkerConfig)
    return config


def test_a_worker_with_a_fleet_secret_file_requires_authentication() -> None:
    assert _worker().auth_required is False
    assert _worker("--fleet-secret-file", "/k").auth_required is True
    assert _worker("--fleet-secret-file", "/k", "--no-require-auth").auth_required is False


def test_the_worker_reads_the_fleet_secrets_at_start_and_refuses_a_readable_file(
        tmp_path: Path) -> None:
    from trainguard.errors import ConfigError
    from trainguard.pipeline.worker import message_auth
    from trainguard.schemas.keyfiles import init_fleet_secrets, rotate_fleet_secrets

    path = tmp_path / "fleet.json"
    init_fleet_secrets(path)
    rotate_fleet_secrets(path)
    auth = message_auth(_worker("--fleet-secret-file", str(path)))
    assert auth is not None and auth.required and len(auth.verifier.kids) == 2
    assert message_auth(_worker()) is None
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="has mode 0644"):
        message_auth(_worker("--fleet-secret-file", str(path)))


def test_requiring_authentication_without_a_secret_file_is_a_config_error() -> None:
    from trainguard.errors import ConfigError

    with pytest.raises(ConfigError, match="require_auth needs a fleet secret file"):
        WorkerConfig(bootstrap="h:1", store=_worker().store, require_auth=True)
