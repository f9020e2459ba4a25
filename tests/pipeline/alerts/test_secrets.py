"""Receiver secrets from ``*_file`` paths, ``$CREDENTIALS_DIRECTORY`` and the environment."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from trainguard.cli.check_config import config_doc
from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.receivers import (
    AlertmanagerReceiver,
    PagerDutyReceiver,
    SlackReceiver,
    WebhookReceiver,
    parse_receivers,
)
from trainguard.pipeline.config_loader import load_alerting

KEY = "0123456789abcdef0123456789abcdef"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/SECRETSECRET"
PD = {"type": "pagerduty", "name": "pd"}


def one(entry: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    [rx] = parse_receivers([entry], environ=environ or {})
    return rx


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_routing_key_from_an_absolute_file_drops_the_trailing_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "pd", KEY + "\n")
    rx = one({**PD, "routing_key_file": str(path)})
    assert isinstance(rx, PagerDutyReceiver) and rx.routing_key == KEY


def test_a_relative_file_is_read_from_the_systemd_credentials_directory(tmp_path: Path) -> None:
    secret_file(tmp_path, "pd", KEY)
    rx = one({**PD, "routing_key_file": "pd"}, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert rx.routing_key == KEY


def test_a_relative_file_without_a_credentials_directory_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"routing_key_file='pd'.*CREDENTIALS_DIRECTORY"):
        one({**PD, "routing_key_file": "pd"})


def test_routing_key_from_the_environment() -> None:
    assert one({**PD, "routing_key_env": "PD_KEY"}, {"PD_KEY": KEY}).routing_key == KEY


def test_an_unset_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="routing_key_env: environment variable PD_KEY"):
        one({**PD, "routing_key_env": "PD_KEY"})


@pytest.mark.parametrize("both", [("routing_key", "routing_key_file"),
                                  ("routing_key", "routing_key_env"),
                                  ("routing_key_file", "routing_key_env")])
def test_a_secret_given_two_ways_is_a_config_error_naming_the_keys(
        tmp_path: Path, both: tuple[str, str]) -> None:
    values = {"routing_key": KEY, "routing_key_file": str(secret_file(tmp_path, "k", KEY)),
              "routing_key_env": "PD_KEY"}
    entry = {**PD, **{k: values[k] for k in both}}
    with pytest.raises(ConfigError, match=f"{both[0]} and {both[1]} are both set") as err:
        one(entry, {"PD_KEY": KEY})
    assert KEY not in str(err.value)


def test_a_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=re.escape(f"routing_key_file: cannot read '{missing}'")):
        one({**PD, "routing_key_file": str(missing)})


def test_an_unreadable_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir()  # reading a directory fails whoever runs the test (root included)
    with pytest.raises(ConfigError, match=re.escape(f"cannot read '{directory}'")):
        one({**PD, "routing_key_file": str(directory)})


def test_an_empty_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        one({**PD, "routing_key_file": str(secret_file(tmp_path, "pd", "\n"))})


def test_a_wrong_key_read_from_a_file_is_refused_without_printing_it(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "pd", "short-secret-value")
    with pytest.raises(ConfigError, match="routing_key has 18 characters") as err:
        one({**PD, "routing_key_file": str(path)})
    assert "short-secret-value" not in str(err.value)


def test_slack_url_from_a_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "slack", SLACK_URL + "\n")
    rx = one({"type": "slack", "name": "sl", "url_file": str(path)})
    assert isinstance(rx, SlackReceiver) and rx.url == SLACK_URL


def test_webhook_headers_from_files_and_environment(tmp_path: Path) -> None:
    secret_file(tmp_path, "hook-auth", "Bearer s3cret\n")
    rx = one({"type": "webhook", "name": "wh", "url": "https://hook.example/in",
              "headers": {"X-Team": "gpu"}, "header_files": {"Authorization": "hook-auth"},
              "header_env": {"X-Api-Key": "HOOK_KEY"}},
             {"CREDENTIALS_DIRECTORY": str(tmp_path), "HOOK_KEY": "k-123"})
    assert isinstance(rx, WebhookReceiver)
    assert rx.headers == {"X-Team": "gpu", "Authorization": "Bearer s3cret", "X-Api-Key": "k-123"}


def test_a_header_given_twice_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "auth", "Bearer x")
    with pytest.raises(ConfigError, match="header 'Authorization' is set in headers and in "
                                          "header_files"):
        one({"type": "webhook", "name": "wh", "url": "https://hook.example/in",
             "headers": {"Authorization": "Bearer y"},
             "header_files": {"Authorization": str(path)}})


def test_alertmanager_basic_auth_header_from_a_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "am-auth", "Basic dXNlcjpwYXNz")
    rx = one({"type": "alertmanager", "name": "am", "url": "https://am.example",
              "header_files": {"Authorization": str(path)}})
    assert isinstance(rx, AlertmanagerReceiver)
    assert rx.headers == {"Authorization": "Basic dXNlcjpwYXNz"}
    assert "dXNlcjpwYXNz" not in repr(rx)


def test_secret_keys_are_only_accepted_for_secrets() -> None:
    with pytest.raises(ConfigError, match="unknown key.*url_file"):
        one({"type": "alertmanager", "name": "am", "url_file": "/x"})


def test_check_config_prints_no_secret_read_from_files(tmp_path: Path) -> None:
    pd = secret_file(tmp_path, "pd", KEY)
    slack = secret_file(tmp_path, "slack", SLACK_URL)
    auth = secret_file(tmp_path, "auth", "Bearer s3cret")
    toml = tmp_path / "worker.toml"
    toml.write_text(
        f'[[receivers]]\ntype = "pagerduty"\nname = "pd"\nrouting_key_file = "{pd}"\n\n'
        f'[[receivers]]\ntype = "slack"\nname = "sl"\nurl_file = "{slack}"\n\n'
        f'[[receivers]]\ntype = "webhook"\nname = "wh"\nurl = "https://hook.example/in"\n'
        f'header_files = {{ Authorization = "{auth}" }}\n')
    config = load_alerting(toml, environ={})
    text = json.dumps(config_doc(config))
    for secret in (KEY, SLACK_URL, "s3cret"):
        assert secret not in text and secret not in repr(config)
    assert '"Authorization": "***"' in text
