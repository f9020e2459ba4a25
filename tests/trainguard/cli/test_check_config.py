"""``trainguard agent --check-config`` and ``worker --check-config``: validate, print, exit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trainguard import envvars
from trainguard.cli import main
from trainguard.cli.check_config import REDACTED, config_doc
from trainguard.pipeline.config_loader import load_alerting
from trainguard.pipeline.store.url import Secret

AGENT_TOML = """
cluster = "research-a"
backend = "simulated"
interval_s = 2.0

[kafka]
bootstrap = "kafka-1:9092,kafka-2:9092"
security_protocol = "SASL_SSL"
username = "agent-gpu-17"

[spool]
dir = "{spool}"
max_mb = 64
"""

WORKER_TOML = """
[alerts]
clear_hold_s = 45.0

[[receivers]]
type = "pagerduty"
name = "pagerduty"
routing_key = "0123456789abcdef0123456789abcdef"

[[receivers]]
type = "slack"
name = "slack-oncall"
url = "https://hooks.slack.com/services/T000/B000/XXXX"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: the settings' variables of the machine running the tests go."""
    for name in envvars.__all__:
        monkeypatch.delenv(getattr(envvars, name), raising=False)


def test_config_doc_redacts_hidden_fields_secrets_and_secret_names() -> None:
    @dataclass
    class Receiver:
        url: str = field(repr=False)
        headers: dict[str, str] = field(repr=False)
        name: str = "hook"
        api_token: str = "t0ken"
        password_file: str = "/etc/tg/pw"

    @dataclass
    class Config:
        store_password: Secret
        receivers: tuple[Receiver, ...]
        unset: str = field(default="", repr=False)
        paths: frozenset[Path] = frozenset({Path("/b"), Path("/a")})

    doc = config_doc(Config(Secret("pw"), (Receiver("https://hook/x", {"Authorization": "B"}),)))

    assert doc == {
        "store_password": REDACTED,
        "receivers": [{"url": REDACTED, "headers": {"Authorization": REDACTED}, "name": "hook",
                       "api_token": REDACTED, "password_file": "/etc/tg/pw"}],
        "unset": "", "paths": ["/a", "/b"]}


# -- agent ----------------------------------------------------------------------------------


def test_agent_check_config_prints_file_env_and_flags_merged_with_secrets_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "spool"
    toml = tmp_path / "agent.toml"
    toml.write_text(AGENT_TOML.format(spool=spool))
    monkeypatch.setenv(envvars.KAFKA_PASSWORD, "hunter2")
    monkeypatch.setenv(envvars.CLUSTER, "from-env")  # the environment beats the file
    monkeypatch.setenv(envvars.INTERVAL_S, "3.0")

    code = main(["agent", "--config", str(toml), "--check-config", "--interval", "0.5",
                 "--node", "gpu-17"])

    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert doc["cluster"] == "from-env" and doc["node"] == "gpu-17"
    assert doc["interval_s"] == 0.5  # the flag beats the environment
    assert doc["kafka"]["bootstrap"] == "kafka-1:9092,kafka-2:9092"
    assert doc["kafka"]["security"]["username"] == "agent-gpu-17"
    assert doc["kafka"]["security"]["password"] == REDACTED
    assert doc["spool_max_bytes"] == 64 * 1024 * 1024
    assert "hunter2" not in out
    assert not spool.exists()  # nothing started: the spool is not even created


def test_agent_check_config_names_a_misspelt_key_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('[kafka]\nbootstrapp = "kafka-1:9092"\n')

    assert main(["agent", "--config", str(toml), "--check-config"]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainguard agent: error:")
    assert "bootstrapp" in lines[0]


def test_agent_check_config_checks_the_node_key_file_as_the_daemon_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "node.key"
    assert main(["agent", "--backend", "simulated", "--node-key-file", str(missing),
                 "--check-config"]) == 2
    assert str(missing) in capsys.readouterr().err


# -- worker ---------------------------------------------------------------------------------


def test_worker_check_config_prints_the_config_with_receiver_secrets_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text(WORKER_TOML)
    data_dir = tmp_path / "worker"
    monkeypatch.setenv(envvars.CLICKHOUSE_PASSWORD, "ch-s3cret")
    monkeypatch.setenv(envvars.PARTITIONS, "6")

    code = main(["worker", "--check-config", "--config", str(toml), "--bootstrap", "k1:9092",
                 "--store", "http://writer@clickhouse:8123/tg", "--data-dir", str(data_dir)])

    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert doc["bootstrap"] == "k1:9092" and doc["partitions"] == 6
    assert doc["store"]["host"] == "clickhouse" and doc["store"]["password"] == REDACTED
    assert doc["alerting"]["lifecycle"]["clear_hold_s"] == 45.0
    pagerduty, slack = doc["alerting"]["receivers"]
    assert pagerduty["routing_key"] == REDACTED and slack["url"] == REDACTED
    for secret in ("ch-s3cret", "0123456789abcdef", "hooks.slack.com"):
        assert secret not in out
    assert not data_dir.exists()  # nothing started


def test_worker_check_config_names_an_unknown_key_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text("[alerts]\nclear_hold = 30.0\n")

    assert main(["worker", "--check-config", "--config", str(toml)]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "clear_hold" in captured.err


def test_worker_check_config_reads_the_fleet_secret_file_as_the_worker_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "fleet.secrets"
    assert main(["worker", "--check-config", "--fleet-secret-file", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_worker_check_config_reads_receiver_secrets_from_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "pd").write_text("fedcba9876543210fedcba9876543210\n")
    toml = tmp_path / "worker.toml"
    toml.write_text('[alerts]\nseverity_labels = { ticket = "error" }\n\n'
                    '[[receivers]]\ntype = "pagerduty"\nname = "pd"\nrouting_key_file = "pd"\n')
    monkeypatch.setenv(envvars.CREDENTIALS_DIRECTORY, str(creds))

    assert main(["worker", "--check-config", "--config", str(toml)]) == 0

    out = capsys.readouterr().out
    [pd] = json.loads(out)["alerting"]["receivers"]
    assert pd["routing_key"] == REDACTED and pd["min_severity"] == "page"
    assert pd["severity_labels"] == {"page": "critical", "ticket": "error", "info": "info"}
    assert "fedcba98" not in out


def test_worker_check_config_names_a_secret_given_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text('[[receivers]]\ntype = "slack"\nname = "sl"\n'
                    'url = "https://hooks.slack.com/services/T/B/SECRET"\n'
                    'url_file = "/run/credentials/trainguard-worker.service/slack"\n')

    assert main(["worker", "--check-config", "--config", str(toml)]) == 2

    err = capsys.readouterr().err
    assert "url and url_file are both set" in err and "SECRET" not in err


def test_the_shipped_worker_toml_is_valid() -> None:
    shipped = Path(__file__).resolve().parents[3] / "infra" / "worker" / "worker.toml"
    config = load_alerting(shipped, environ={})
    assert config.severity_labels.page == "critical"
    assert [r.name for r in config.receivers] == ["alertmanager"]
