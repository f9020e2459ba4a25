"""Key files: private (0600), refused when others may read them, rotated without a gap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trainguard.errors import ConfigError
from trainguard.schemas.auth import FleetSecret, derive_node_key
from trainguard.schemas.keyfiles import (
    enrol_node,
    init_fleet_secrets,
    read_fleet_secrets,
    read_node_key,
    rotate_fleet_secrets,
)


def _counter():
    n = iter(range(1, 100))
    return lambda size: bytes([next(n)]) * size


def test_init_writes_a_private_file_holding_the_current_secret(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "fleet.json"
    secret = init_fleet_secrets(path, random=_counter())
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_fleet_secrets(path) == (secret,)
    assert secret.secret.hex() in path.read_text()


def test_init_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    first = init_fleet_secrets(path, random=_counter())
    with pytest.raises(ConfigError, match="exists; use `keys rotate`"):
        init_fleet_secrets(path)
    assert read_fleet_secrets(path) == (first,)
    assert init_fleet_secrets(path, force=True) != first


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_others_may_read_is_refused_naming_its_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "fleet.json"
    init_fleet_secrets(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=f"has mode {mode:04o}; expected 0600 or 0400"):
        read_fleet_secrets(path)


def test_a_read_only_0400_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    secret = init_fleet_secrets(path)
    path.chmod(0o400)
    assert read_fleet_secrets(path) == (secret,)


def test_rotate_makes_a_new_current_secret_and_keeps_the_old_one_as_previous(
        tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    first = init_fleet_secrets(path, random=_counter())
    new, previous = rotate_fleet_secrets(path)
    assert previous == first and new != first
    assert read_fleet_secrets(path) == (new, first)
    newest, _ = rotate_fleet_secrets(path)
    assert read_fleet_secrets(path) == (newest, new)  # the oldest is gone
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_enrol_writes_the_nodes_key_derived_from_the_current_secret(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.json"
    init_fleet_secrets(fleet)
    rotate_fleet_secrets(fleet)
    out = tmp_path / "node-a.key"
    key = enrol_node(fleet, "node-a", out)
    current = read_fleet_secrets(fleet)[0]
    assert read_node_key(out).key == key.key == derive_node_key(current, "node-a").key
    assert read_node_key(out).kid == current.kid
    assert os.stat(out).st_mode & 0o777 == 0o600


def test_a_node_key_file_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_text(json.dumps({"format": "ssh-rsa", "key": "00"}))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="format 'ssh-rsa'; expected 'trainguard-node-key/1'"):
        read_node_key(path)


def test_a_missing_key_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fleet secret file .*nope.json: cannot read it"):
        read_fleet_secrets(tmp_path / "nope.json")


def test_fleet_secret_equality_is_by_secret() -> None:
    assert FleetSecret(b"a" * 32) == FleetSecret(b"a" * 32) != FleetSecret(b"b" * 32)
