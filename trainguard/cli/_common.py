"""Shared CLI helpers: options that also read an environment variable, shown in ``--help``."""

from __future__ import annotations

import argparse
import os
import pwd
from typing import Any

from trainguard import envvars

__all__ = [
    "add_bootstrap", "add_env_option", "add_store", "add_topic_prefix", "os_user",
    "parse_instant", "store_url",
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
