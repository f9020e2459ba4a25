"""Shared CLI helpers: options that also read an environment variable, shown in ``--help``."""

from __future__ import annotations

import argparse
import os
import pwd
from typing import Any

from trainguard import envvars

__all__ = [
    "add_bootstrap", "add_env_option", "add_json_flag", "add_kafka_security", "add_store",
    "add_topic_prefix", "kafka_security", "os_user", "parse_instant", "print_json", "store_url",
]


def add_env_option(
    parser: argparse.ArgumentParser, flag: str, env: str, default: Any, help: str, **kw: Any
) -> None:
    """Add ``flag`` whose default comes from ``env`` (named in the help text)."""
    # A string default goes through ``type`` like a command-line value, so a bad
    # environment value gets argparse's clean error instead of a traceback.
    raw = os.environ.get(env)
    value: Any = default if raw is None else raw
    parser.add_argument(
        flag, default=value, help=f"{help} (env: {env}; default: %(default)s)", **kw
    )


def add_bootstrap(parser: argparse.ArgumentParser, default: str = "") -> None:
    """``--bootstrap``: Kafka bootstrap servers."""
    add_env_option(
        parser,
        "--bootstrap",
        envvars.BOOTSTRAP,
        default,
        "Kafka bootstrap servers, host:port[,host:port]",
    )


def add_kafka_security(parser: argparse.ArgumentParser) -> None:
    """``--kafka-*``: how to authenticate to Kafka; the password comes from a file or the env."""
    add_env_option(parser, "--kafka-security-protocol", envvars.KAFKA_SECURITY_PROTOCOL,
                   "PLAINTEXT", "Kafka security protocol: PLAINTEXT, SSL or SASL_SSL",
                   type=str.upper, choices=["PLAINTEXT", "SSL", "SASL_SSL"])
    add_env_option(parser, "--kafka-sasl-mechanism", envvars.KAFKA_SASL_MECHANISM,
                   "SCRAM-SHA-512", "SASL mechanism with SASL_SSL", type=str.upper,
                   choices=["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
    add_env_option(parser, "--kafka-username", envvars.KAFKA_USERNAME, "",
                   "SASL user name")
    add_env_option(parser, "--kafka-password-file", envvars.KAFKA_PASSWORD_FILE, None,
                   f"file holding the SASL password (or set {envvars.KAFKA_PASSWORD}; "
                   "never a flag)")
    add_env_option(parser, "--kafka-ca-file", envvars.KAFKA_CA_FILE, None,
                   "CA certificate(s) (PEM) that signed the brokers' certificates; default: "
                   "the system CAs")
    add_env_option(parser, "--kafka-cert-file", envvars.KAFKA_CERT_FILE, None,
                   "client certificate (PEM) for mutual TLS")
    add_env_option(parser, "--kafka-key-file", envvars.KAFKA_KEY_FILE, None,
                   "client key (PEM) for mutual TLS")


def kafka_security(args: argparse.Namespace) -> Any:
    """The validated :class:`~trainguard.schemas.kafka_security.KafkaSecurity` of the flags."""
    from trainguard.schemas.kafka_security import KafkaSecurity

    return KafkaSecurity.load(
        args.kafka_security_protocol, mechanism=args.kafka_sasl_mechanism,
        username=args.kafka_username, password_file=args.kafka_password_file,
        password_env=os.environ.get(envvars.KAFKA_PASSWORD), ca_file=args.kafka_ca_file,
        cert_file=args.kafka_cert_file, key_file=args.kafka_key_file)


def add_store(
    parser: argparse.ArgumentParser, default: str = "chdb://./trainguard-data/store"
) -> None:
    """``--store``: the store URL (password only from the environment)."""
    add_env_option(
        parser,
        "--store",
        envvars.STORE_URL,
        default,
        "store URL: chdb://PATH (embedded ClickHouse) or http(s)://USER@HOST:PORT/DB",
    )


def add_topic_prefix(parser: argparse.ArgumentParser) -> None:
    """``--topic-prefix``: prefix of every topic name."""
    add_env_option(parser, "--topic-prefix", envvars.TOPIC_PREFIX, "tg", "prefix of topic names")


def store_url(raw: str) -> Any:
    """Parse a store URL, taking the server password from the environment only."""
    from trainguard.pipeline.store.url import Secret, StoreUrl

    password = os.environ.get(envvars.CLICKHOUSE_PASSWORD)
    return StoreUrl.parse(raw, Secret(password) if password else None)


def parse_instant(flag: str, text: str) -> float:
    """Epoch seconds of an ISO 8601 time that names its timezone (``flag`` for errors)."""
    from datetime import datetime

    from trainguard.errors import ConfigError

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} is not an ISO 8601 time; expected e.g. 2025-01-31T18:00Z"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(
            f"{flag} {text!r} has no timezone; add Z or an offset, e.g. {text.strip()}Z"
        )
    return when.timestamp()


def os_user() -> str:
    """The login name of the real user id running this process, for the record of who acted.

    Not ``$USER`` or ``$LOGNAME`` (what :func:`getpass.getuser` reads first): anyone can set
    those. A uid without a passwd entry (a container) is recorded as ``uid:<n>``.
    """
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def add_json_flag(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json``: print ``what`` as one JSON document (see :func:`print_json`) instead of text."""
    parser.add_argument("--json", action="store_true",
                        help=f"print {what} as JSON on stdout instead of text")


def print_json(doc: Any) -> None:
    """Print ``doc`` as one JSON document on stdout: what every ``--json`` prints.

    Dataclasses and msgspec structs become objects, tuples and sets arrays, paths and other
    values their ``str``; non-finite floats become ``null``. Nothing else goes to stdout
    while a command prints JSON (progress goes to stderr), so ``| jq`` always works.
    """
    import msgspec

    raw = msgspec.json.encode(doc, enc_hook=_json_value)
    print(msgspec.json.format(raw, indent=2).decode(), flush=True)


def _json_value(value: Any) -> Any:
    """The JSON form of what msgspec cannot encode itself (paths, store URLs, ...)."""
    return str(value)

