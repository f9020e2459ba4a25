"""The local broker's secure mode, without a broker: credentials, server settings, commands."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from trainguard.cli.main import build_parser
from trainguard.cli.worker import worker_config
from trainguard.errors import ConfigError
from trainguard.local.broker import LocalBroker
from trainguard.local.broker_security import (
    DEFAULT_USERS,
    ensure_credentials,
    scram_format_args,
    secure_listener_properties,
)
from trainguard.local.worker import WorkerProcess
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.kafka_acls import kafka_acls_commands, pipeline_acls
from trainguard.schemas.topics import Topics


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    return ensure_credentials(tmp_path_factory.mktemp("sec") / "security")


def test_the_broker_certificate_is_signed_by_the_ca_for_127_0_0_1(creds) -> None:
    broker_pem = creds.directory / "broker.pem"
    out = subprocess.run(["openssl", "verify", "-CAfile", str(creds.ca_file),
                          "-verify_ip", "127.0.0.1", str(broker_pem)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_secrets_are_readable_by_their_owner_only_and_passwords_differ(creds) -> None:
    assert stat.S_IMODE(creds.directory.stat().st_mode) == 0o700
    for path in [creds.keystore, creds.directory / "ca.key",
                 *(creds.password_file(u) for u in DEFAULT_USERS)]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    passwords = {creds.password(u) for u in DEFAULT_USERS}
    assert len(passwords) == len(DEFAULT_USERS) and all(len(p) >= 24 for p in passwords)


def test_credentials_are_written_once_per_directory(creds) -> None:
    ca = creds.ca_file.read_bytes()
    again = ensure_credentials(creds.directory)
    assert again.ca_file.read_bytes() == ca
    assert again.password("agent") == creds.password("agent")


def test_each_user_gets_sasl_ssl_client_settings_with_the_ca(creds) -> None:
    sec = creds.client("agent")
    assert (sec.protocol, sec.mechanism, sec.username) == ("SASL_SSL", "SCRAM-SHA-512", "agent")
    assert sec.password == creds.password("agent") and sec.ca_file == creds.ca_file


def test_the_server_settings_enable_scram_tls_and_the_standard_authorizer(creds) -> None:
    props = dict(line.split("=", 1) for line in secure_listener_properties(creds, 19092, 19093))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["authorizer.class.name"] == \
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert "PLAINTEXT" not in props["listener.security.protocol.map"]
    # Only admin and the broker's own certificate are super users: no anonymous principal.
    assert props["super.users"] == "User:admin;User:CN=trainguard-broker"


def test_every_user_is_created_when_the_storage_is_formatted(creds) -> None:
    args = scram_format_args(creds)
    assert args.count("--add-scram") == len(DEFAULT_USERS)
    assert f"SCRAM-SHA-512=[name=worker,password={creds.password('worker')}]" in args


def test_a_plain_broker_has_no_credentials_and_plaintext_clients(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path, 19092)
    assert broker.client_security("agent").protocol == "PLAINTEXT"
    assert not (tmp_path / "security").exists()


def test_the_worker_process_gets_its_password_as_a_file_and_parses_it_back(creds,
                                                                           tmp_path) -> None:
    w = WorkerProcess("127.0.0.1:19092", f"chdb://{tmp_path / 'store'}", topic_prefix="p",
                      data_dir=tmp_path, log_path=tmp_path / "w.log",
                      security=creds.client("worker"))
    cmd = w.command()
    assert creds.password("worker") not in " ".join(cmd)
    args = build_parser().parse_args(cmd[cmd.index("worker"):])
    config = worker_config(args)
    assert isinstance(config, WorkerConfig)
    assert config.security == creds.client("worker")
    assert config.security.password == creds.password("worker")


def test_no_worker_flag_takes_a_password_only_a_password_files_path() -> None:
    # argparse reads --kafka-password as an abbreviation of --kafka-password-file.
    args = build_parser().parse_args(["worker", "--kafka-security-protocol", "SASL_SSL",
                                      "--kafka-username", "w", "--kafka-password", "hunter2"])
    assert args.kafka_password_file == "hunter2"
    with pytest.raises(ConfigError, match="cannot read the Kafka password file 'hunter2'"):
        worker_config(args)


def test_kafka_acls_prints_the_grants_for_a_production_cluster(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["kafka", "acls", "--topic-prefix", "prod",
                                      "--agent", "agent-n1", "--agent", "agent-n2"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == kafka_acls_commands(pipeline_acls(
        Topics("prod"), agents=["agent-n1", "agent-n2"], workers=["worker"],
        app_id="trainguard-worker"))
    assert any(line.endswith("--allow-principal User:agent-n2 --operation Write "
                             "--topic prod.steps.v1") for line in lines)
    assert not any("User:agent-n1 --operation Write --topic prod.findings" in line
                   for line in lines)
