"""``KafkaSecurity``: validated client settings; the password comes from a file or the env."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from trainguard.errors import ConfigError
from trainguard.schemas.kafka_security import PLAINTEXT, KafkaSecurity


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.password"
    path.write_text("s3cret-pw\n")
    return path


def test_plaintext_adds_no_client_settings() -> None:
    assert PLAINTEXT.kafka_python_kwargs() == {}
    assert PLAINTEXT.cli_args() == []
    assert PLAINTEXT.ssl_context() is None


def test_the_password_is_read_from_its_file_without_the_newline(password_file: Path) -> None:
    sec = KafkaSecurity.load("sasl_ssl", username="agent", password_file=password_file)
    assert sec.password == "s3cret-pw"
    assert sec.kafka_python_kwargs() == {
        "security_protocol": "SASL_SSL", "ssl_check_hostname": True,
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "agent",
        "sasl_plain_password": "s3cret-pw"}


def test_a_password_file_wins_over_the_environment(password_file: Path) -> None:
    sec = KafkaSecurity.load("SASL_SSL", username="agent", password_file=password_file,
                             password_env="from-env")
    assert sec.password == "s3cret-pw"
    assert KafkaSecurity.load("SASL_SSL", username="a", password_env="from-env").password \
        == "from-env"


def test_the_password_never_shows_in_repr_or_describe(password_file: Path) -> None:
    sec = KafkaSecurity.load("SASL_SSL", username="agent", password_file=password_file)
    assert "s3cret" not in repr(sec) and "s3cret" not in sec.describe()
    assert sec.describe() == "SASL_SSL SCRAM-SHA-512 user=agent"


def test_child_processes_get_the_password_file_never_the_password(password_file: Path,
                                                                   tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    sec = KafkaSecurity.load("SASL_SSL", username="worker", password_file=password_file,
                             ca_file=ca)
    args = sec.cli_args()
    assert "s3cret-pw" not in " ".join(args)
    assert args[args.index("--kafka-password-file") + 1] == str(password_file)
    assert args[args.index("--kafka-ca-file") + 1] == str(ca)
    env_only = KafkaSecurity.load("SASL_SSL", username="worker", password_env="pw")
    with pytest.raises(ConfigError, match="no password file"):
        env_only.cli_args()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"protocol": "SASL_PLAINTEXT"}, "unknown Kafka security protocol 'SASL_PLAINTEXT'"),
    ({"protocol": "SASL_SSL", "mechanism": "SCRAM-MD5", "username": "a", "password": "p"},
     "unknown SASL mechanism 'SCRAM-MD5'"),
    ({"protocol": "SASL_SSL", "password": "p"}, "needs a username"),
    ({"protocol": "SASL_SSL", "username": "agent"}, "user 'agent' has no password"),
    ({"username": "agent", "password": "p"}, "security protocol is PLAINTEXT"),
    ({"protocol": "SSL", "cert_file": Path("c.pem")}, "needs its key"),
    ({"ca_file": Path("ca.pem")}, "TLS files are set but the security protocol is PLAINTEXT"),
])
def test_settings_a_client_cannot_connect_with_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaSecurity(**kwargs)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password file .*nope.password"):
        KafkaSecurity.load("SASL_SSL", username="a", password_file=tmp_path / "nope.password")
    with pytest.raises(ConfigError, match="ca file .*missing.pem"):
        KafkaSecurity.load("SSL", ca_file=tmp_path / "missing.pem")
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        KafkaSecurity.load("SASL_SSL", username="a", password_file=empty)


def test_ssl_uses_the_system_cas_unless_a_ca_file_is_given() -> None:
    context = KafkaSecurity("SSL").ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
