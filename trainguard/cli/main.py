"""The ``trainguard`` command: one entry point, one subcommand per deployable or tool.

Heavy dependencies (faust, chdb, numpy) are imported inside the handlers, so a GPU node
with only ``trainguard[agent]`` installed can run ``trainguard agent``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from trainguard import __version__, envvars
from trainguard.cli import agent, alerts, change, db, demo, kafka, keys, report, worker
from trainguard.cli import eval as eval_cmd
from trainguard.cli import grafana as grafana_cmd
from trainguard.cli._common import add_env_option
from trainguard.errors import ConfigError, TrainguardError
from trainguard.logs import configure_logging

__all__ = ["build_parser", "error_text", "main"]

#: Loggers of client libraries whose warnings (a retried request, a refused connection)
#: repeat what the command's one error line says; a command's own output is enough.
_LIBRARY_LOGGERS = ("urllib3", "clickhouse_connect", "kafka", "grafana_client", "requests")
#: Long-running commands keep the libraries' warnings: they are the daemons' only trace.
_DAEMONS = frozenset({"agent", "worker", "simulate", "demo"})
#: ``<urllib3.connection.HTTPConnection object at 0x7f...>``: the repr of an object.
_OBJECT_REPR = re.compile(r"<([^<>]+?)(?: object)? at 0x[0-9A-Fa-f]+>")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render the README's reference)."""
    parser = argparse.ArgumentParser(
        prog="trainguard",
        description="Streaming telemetry that watches GPU training clusters for silent faults "
        "and sabotage.",
    )
    parser.add_argument("--version", action="version", version=f"trainguard {__version__}")
    add_env_option(
        parser,
        "--log-level",
        envvars.LOG_LEVEL,
        "INFO",
        "logging level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    add_env_option(
        parser,
        "--log-format",
        envvars.LOG_FORMAT,
        "text",
        "log line format",
        choices=["text", "json"],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # agent also adds `simulate`
    for module in (demo, eval_cmd, agent, worker, kafka, keys, db, alerts, change, grafana_cmd,
                   report):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, configure logging, run the command; one clear line on failure."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.command not in _DAEMONS and args.log_level != "DEBUG":
        # On the handlers, not the loggers' levels: a library may set its loggers' level
        # when it is imported, which happens after this (clickhouse-connect does).
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_libraries)
    try:
        code: int = args.func(args)
    except ConfigError as exc:  # the invocation or its configuration: retrying cannot help
        print(f"trainguard {args.command}: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except TrainguardError as exc:  # at run time (broker, store, ...): a restart may help
        print(f"trainguard {args.command}: error: {error_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Drop a client library's record below ERROR (a logging filter)."""
    library = record.name.split(".", 1)[0] in _LIBRARY_LOGGERS
    return not library or record.levelno >= logging.ERROR


def error_text(exc: BaseException) -> str:
    """The message of ``exc`` for an operator: object reprs become their class names.

    Client libraries put reprs such as ``<urllib3.connection.HTTPConnection object at
    0x7f3a...>`` into their messages; the address means nothing to the reader and changes
    on every run, so the message becomes ``HTTPConnection``.
    """
    def name(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        return inner.rsplit(".", 1)[-1] if " " not in inner else inner

    return _OBJECT_REPR.sub(name, str(exc))

