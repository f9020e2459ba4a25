"""``trainguard kafka fetch|start|stop|status``: run the local single-node Kafka broker.

``trainguard kafka acls`` prints the ``kafka-acls.sh`` commands that secure a deployment
on any cluster (agents write telemetry only; workers alone write verdicts).

Every option also reads an environment variable (named in ``--help``). Errors are raised
as :class:`trainguard.errors.BrokerError` for the root CLI to print.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from trainguard import envvars
from trainguard.cli._common import add_env_option, add_json_flag, add_topic_prefix, print_json
from trainguard.local.broker import KAFKA_VERSION, LocalBroker, default_cache_dir, fetch_jars

__all__ = ["register"]

DEFAULT_DATA_DIR = Path("trainguard-data") / "kafka"
DEFAULT_PORT = 9092


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``kafka`` command and its ``fetch``/``start``/``stop``/``status`` subcommands."""
    kafka = subparsers.add_parser(
        "kafka", help="run a local single-node Kafka broker for demos and tests",
        description=f"Fetch, start, stop and inspect a local Apache Kafka {KAFKA_VERSION} "
                    "broker (KRaft, one node, 127.0.0.1 only).")
    sub = kafka.add_subparsers(dest="kafka_command", metavar="COMMAND", required=True)

    cache = argparse.ArgumentParser(add_help=False)
    add_env_option(cache, "--cache-dir", envvars.KAFKA_CACHE, default_cache_dir(),
                   "where the broker jars are cached", type=Path)
    broker = argparse.ArgumentParser(add_help=False)
    add_env_option(broker, "--data-dir", envvars.KAFKA_DATA_DIR, DEFAULT_DATA_DIR,
                   "broker config, pid file, logs and data", type=Path)
    add_env_option(broker, "--port", envvars.KAFKA_PORT, DEFAULT_PORT,
                   "client port; the controller listens on the next one", type=_port)

    p = sub.add_parser("fetch", parents=[cache],
                       help="download the broker jars with Maven (progress on stderr)")
    p.set_defaults(func=_fetch)
    p = sub.add_parser("start", parents=[cache, broker],
                       help="start the broker in the background and wait until it is ready")
    p.add_argument("--timeout", type=float, default=90.0,
                   help="seconds to wait for the broker to be ready (default: %(default)s)")
    p.add_argument("--secure", action="store_true",
                   help="SASL_SSL (SCRAM-SHA-512 users admin, worker, agent), TLS with a CA "
                        "made in <data-dir>/security, and ACLs (StandardAuthorizer); needs a "
                        "data dir formatted in secure mode")
    p.set_defaults(func=_start)
    p = sub.add_parser("stop", parents=[broker], help="stop the broker (no-op if not running)")
    p.set_defaults(func=_stop)
    p = sub.add_parser("status", parents=[broker],
                       help="show whether the broker is running (exit 0) or not (exit 1)")
    add_json_flag(p, 'the status ({"state": running|starting|stopped, "running", "pid", '
                     '"bootstrap", "data_dir"})')
    p.set_defaults(func=_status)
    p = sub.add_parser("acls", help="print the kafka-acls.sh commands that grant agents and "
                                    "workers what they need on a secured cluster, and no more")
    add_topic_prefix(p)
    p.add_argument("--app-id", default="trainguard-worker",
                   help="the workers' app id = consumer group (default: %(default)s)")
    p.add_argument("--agent", dest="agents", action="append", metavar="USER",
                   help="an agent's SASL user (repeatable; default: agent)")
    p.add_argument("--worker", dest="workers", action="append", metavar="USER",
                   help="a worker's SASL user (repeatable; default: worker)")
    p.add_argument("--bootstrap-server", default="BROKER:9093",
                   help="written into the commands (default: %(default)s)")
    p.add_argument("--command-config", default="admin.properties",
                   help="kafka-acls.sh client properties of a super user (default: "
                        "%(default)s)")
    p.set_defaults(func=_acls)


def _progress(text: str) -> None:
    """A line of a running fetch, on stderr (stdout keeps the result line alone)."""
    print(f"kafka fetch: {text}", file=sys.stderr, flush=True)


def _fetch(args: argparse.Namespace) -> int:
    libs = fetch_jars(args.cache_dir, progress=_progress)
    print(f"kafka {KAFKA_VERSION} jars ready libs={libs}")
    return 0


def _start(args: argparse.Namespace) -> int:
    libs = fetch_jars(args.cache_dir, progress=_progress)
    broker = LocalBroker(args.data_dir, args.port, libs_dir=libs, secure=args.secure)
    broker.start(timeout=args.timeout)
    status = broker.status()
    print(f"kafka running pid={status.pid} bootstrap={status.bootstrap} "
          f"data_dir={status.data_dir}")
    if args.secure:
        creds = broker.credentials
        print(f"kafka security=SASL_SSL mechanism=SCRAM-SHA-512 ca_file={creds.ca_file} "
              f"password files: {creds.directory}/<{'|'.join(creds.users)}>.password")
    return 0


def _stop(args: argparse.Namespace) -> int:
    broker = LocalBroker(args.data_dir, args.port)
    pid = broker.status().pid
    broker.stop()
    if pid is None:
        print(f"kafka not running data_dir={broker.data_dir}")
    else:
        print(f"kafka stopped pid={pid} data_dir={broker.data_dir}")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = LocalBroker(args.data_dir, args.port).status()
    if args.json:
        state = ("running" if status.running
                 else "starting" if status.pid is not None else "stopped")
        print_json({"state": state, **asdict(status)})
        return 0 if status.running else 1
    if status.running:
        print(f"kafka running pid={status.pid} bootstrap={status.bootstrap} "
              f"data_dir={status.data_dir}")
        return 0
    if status.pid is not None:
        print(f"kafka starting or unresponsive pid={status.pid} bootstrap={status.bootstrap} "
              f"data_dir={status.data_dir}")
    else:
        print(f"kafka not running data_dir={status.data_dir}")
    return 1


def _acls(args: argparse.Namespace) -> int:
    from trainguard.pipeline.kafka_acls import kafka_acls_commands, pipeline_acls
    from trainguard.schemas.topics import Topics

    rules = pipeline_acls(Topics(args.topic_prefix), agents=args.agents or ["agent"],
                          workers=args.workers or ["worker"], app_id=args.app_id)
    for line in kafka_acls_commands(rules, args.bootstrap_server, args.command_config):
        print(line)
    return 0


def _port(text: str) -> int:
    """Argparse type for the client port (the controller takes the next one)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65534:
        raise argparse.ArgumentTypeError(
            f"invalid port '{text}'; expected an integer 1-65534 (the controller uses port+1)")
    return port
