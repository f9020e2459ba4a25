"""``trainguard agent``: the node agent daemon; ``trainguard simulate``: a simulated fleet.

The agent reads its settings from a TOML file (``--config``), then the environment,
then these flags (later wins); see :mod:`trainguard.agents.config_loader`.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from trainguard import envvars
from trainguard.cli._common import (
    add_bootstrap,
    add_env_option,
    add_kafka_security,
    add_topic_prefix,
    kafka_security,
)

__all__ = ["register"]


#: (flag, setting it overrides, environment variable, type, help) of the agent's options.
_FLAGS = [
    ("--bootstrap", "kafka.bootstrap", envvars.BOOTSTRAP, str, "Kafka bootstrap servers"),
    ("--topic-prefix", "kafka.topic_prefix", envvars.TOPIC_PREFIX, str, "topic name prefix"),
    ("--cluster", "cluster", envvars.CLUSTER, str, "cluster name stamped on records"),
    ("--node", "node", envvars.NODE, str, "this node's name (default: hostname)"),
    ("--interval", "interval_s", envvars.INTERVAL_S, float,
     "seconds between samples, 0.1..3600 (default 1.0)"),
    ("--spool-dir", "spool.dir", envvars.SPOOL_DIR, str, "on-disk spool directory"),
    ("--spool-max-mb", "spool.max_mb", envvars.SPOOL_MAX_MB, int, "spool bound in MB"),
    ("--steps-socket", "steps.socket", envvars.STEPS_SOCKET, str,
     "Unix datagram socket where trainers report steps"),
    ("--sim-gpus", "simulated.gpus", envvars.SIM_GPUS, int, "GPUs of the simulated backend"),
    ("--kafka-security-protocol", "kafka.security_protocol", envvars.KAFKA_SECURITY_PROTOCOL,
     str, "PLAINTEXT (default), SSL or SASL_SSL"),
    ("--kafka-sasl-mechanism", "kafka.sasl_mechanism", envvars.KAFKA_SASL_MECHANISM, str,
     "SASL mechanism (default SCRAM-SHA-512)"),
    ("--kafka-username", "kafka.username", envvars.KAFKA_USERNAME, str, "SASL user name"),
    ("--kafka-password-file", "kafka.password_file", envvars.KAFKA_PASSWORD_FILE, str,
     f"file holding the SASL password (or set {envvars.KAFKA_PASSWORD}; never a flag)"),
    ("--kafka-ca-file", "kafka.ca_file", envvars.KAFKA_CA_FILE, str,
     "CA certificate(s) (PEM) of the brokers"),
    ("--kafka-cert-file", "kafka.cert_file", envvars.KAFKA_CERT_FILE, str,
     "client certificate (PEM) for mutual TLS"),
    ("--kafka-key-file", "kafka.key_file", envvars.KAFKA_KEY_FILE, str,
     "client key (PEM) for mutual TLS"),
    ("--node-key-file", "node_key_file", envvars.NODE_KEY_FILE, str,
     "this node's key file (`trainguard keys enrol`, mode 0600); messages carry its MAC"),
    ("--metrics-textfile-dir", "metrics.textfile_dir", envvars.AGENT_METRICS_TEXTFILE_DIR, str,
     "node_exporter textfile-collector directory; trainguard_agent.prom is written there"),
    ("--metrics-port", "metrics.port", envvars.AGENT_METRICS_PORT, int,
     "also serve Prometheus metrics on this port at /metrics (default: off)"),
    ("--metrics-addr", "metrics.addr", envvars.AGENT_METRICS_ADDR, str,
     "address /metrics binds (default 0.0.0.0; 127.0.0.1: local scrapers only)"),
]
#: Settings that flags override, beyond those in _FLAGS.
_OTHER_KEYS = ("backend", "steps.files")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``agent`` and ``simulate`` commands."""
    p = subparsers.add_parser(
        "agent",
        help="run the node agent daemon (GPU samples + trainers' steps → spool → Kafka)",
        description="Settings come from --config (TOML), then environment variables, then "
        "flags; later wins. SIGTERM flushes and exits.",
    )
    env = os.environ
    p.add_argument("--config", type=Path, default=env.get(envvars.AGENT_CONFIG),
                   help=f"TOML config file (env: {envvars.AGENT_CONFIG})")
    for flag, key, var, kind, text in _FLAGS:
        p.add_argument(flag, dest=key, type=kind, default=None, help=f"{text} (env: {var})",
                       metavar=flag[2:].upper().replace("-", "_"))
    p.add_argument("--backend", dest="backend", choices=["nvml", "simulated"], default=None,
                   help=f"GPU backend; default nvml (env: {envvars.AGENT_BACKEND})")
    p.add_argument("--steps-file", dest="steps.files", action="append", default=None,
                   metavar="PATH",
                   help="JSON-lines step log to tail (repeatable)")
    p.add_argument("--ticks", type=int, default=None, help="stop after this many ticks")
    p.add_argument("--check-config", action="store_true",
                   help="build the configuration as the daemon would (file, environment, "
                        "flags; node key checked), print it as JSON with secrets redacted, "
                        "and exit: 0 if valid, 2 if not; starts nothing")
    p.set_defaults(func=_run_agent)

    s = subparsers.add_parser("simulate", help="send telemetry from many simulated nodes (load)")
    add_bootstrap(s, default="127.0.0.1:9092")
    add_kafka_security(s)
    add_topic_prefix(s)
    add_env_option(s, "--cluster", envvars.CLUSTER, "sim", "cluster name stamped on records")
    s.add_argument("--nodes", type=int, default=10, help="simulated nodes (default: %(default)s)")
    s.add_argument("--gpus", type=int, default=8, help="GPUs per node (default: %(default)s)")
    s.add_argument("--ticks", type=int, default=60, help="ticks to send (default: %(default)s)")
    s.add_argument("--fast", action="store_true",
                   help="send ticks back to back in event time instead of once per second")
    add_env_option(s, "--fleet-secret-file", envvars.FLEET_SECRET_FILE, None,
                   "sign each simulated node's messages with its key derived from these "
                   "fleet secrets (for workers that require authentication)")
    s.set_defaults(func=_run_simulate)


def _run_agent(args: argparse.Namespace) -> int:
    from trainguard.agents.config_loader import load_agent_config
    from trainguard.agents.runtime import run_agent
    from trainguard.sd_notify import SdNotifier

    keys = [key for _, key, _, _, _ in _FLAGS] + list(_OTHER_KEYS)
    config = load_agent_config(args.config, os.environ, {k: getattr(args, k) for k in keys})
    if args.check_config:
        from trainguard.agents.runtime import load_node_key
        from trainguard.cli.check_config import print_config

        load_node_key(config)  # as run_agent does first: a bad key file stops the start
        return print_config(config)
    stop = _stop_on_signals()
    agent = run_agent(config, stop, max_ticks=args.ticks,
                      notifier=SdNotifier.from_environ(os.environ))
    print(f"agent stopped node={config.node} batches={agent.batches_sent} steps={agent.steps_sent}")
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from trainguard.agents.config import AgentConfig, KafkaProducerSettings
    from trainguard.agents.fleet import SimulatedFleet
    from trainguard.agents.transport import KafkaTransport
    from trainguard.schemas.topics import Topics

    config = AgentConfig(kafka=KafkaProducerSettings(bootstrap=args.bootstrap,
                                                     security=kafka_security(args)),
                         cluster=args.cluster, node="sim", topics=Topics(args.topic_prefix),
                         sim_gpus=args.gpus)
    signer = None
    if args.fleet_secret_file:
        from trainguard.schemas.auth import FleetSigner
        from trainguard.schemas.keyfiles import read_fleet_secrets

        signer = FleetSigner(read_fleet_secrets(Path(args.fleet_secret_file))[0])
    stop = _stop_on_signals()
    transport = KafkaTransport(config.kafka)
    try:
        fleet = SimulatedFleet(config, transport, nodes=args.nodes, node_prefix=args.cluster,
                               signer=signer)
        sent = fleet.run(args.ticks, realtime=not args.fast, stop=stop)
    finally:
        transport.close(timeout=30)
    c = transport.counters
    print(f"simulate: batches={sent} sent={c.sent} acked={c.acked} failed={c.failed}")
    return 1 if c.failed else 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
