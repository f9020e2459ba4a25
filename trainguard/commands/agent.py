"""``trainguard agent``: run the node agent (simulated GPUs until the NVML daemon lands)."""

from __future__ import annotations

import argparse
import signal
import socket
import threading

from trainguard import envvars
from trainguard.commands._common import add_bootstrap, add_env_option, add_topic_prefix

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``agent`` command."""
    p = subparsers.add_parser("agent", help="run a node agent that streams GPU samples to Kafka")
    add_bootstrap(p, default="127.0.0.1:9092")
    add_topic_prefix(p)
    add_env_option(p, "--cluster", envvars.CLUSTER, "default", "cluster name stamped on records")
    add_env_option(p, "--node", "TRAINGUARD_NODE", socket.gethostname(), "this node's name")
    add_env_option(
        p, "--interval", "TRAINGUARD_INTERVAL_S", 1.0, "seconds between samples", type=float
    )
    p.add_argument(
        "--backend",
        choices=["simulated"],
        default="simulated",
        help="GPU backend (the NVML backend arrives with the agent daemon, issue 3)",
    )
    add_env_option(p, "--sim-gpus", "TRAINGUARD_SIM_GPUS", 8, "GPUs per simulated node", type=int)
    p.add_argument(
        "--sim-nodes",
        type=int,
        default=1,
        help="simulate this many nodes from one process (load generation)",
    )
    p.add_argument("--ticks", type=int, default=None, help="stop after this many ticks")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from agents.config import AgentConfig, KafkaProducerSettings
    from agents.fleet import SimulatedFleet
    from agents.transport import KafkaTransport
    from schemas.topics import Topics

    config = AgentConfig(
        kafka=KafkaProducerSettings(bootstrap=args.bootstrap),
        cluster=args.cluster,
        node=args.node,
        topics=Topics(args.topic_prefix),
        interval_s=args.interval,
        sim_gpus=args.sim_gpus,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    transport = KafkaTransport(config.kafka)
    try:
        fleet = SimulatedFleet(config, transport, nodes=args.sim_nodes, node_prefix=args.node)
        ticks = args.ticks if args.ticks is not None else 2**62
        fleet.run(ticks, realtime=True, stop=stop)
    finally:
        transport.close(timeout=30)
    failed = transport.counters.failed
    print(
        f"agent stopped sent={transport.counters.sent} "
        f"acked={transport.counters.acked} failed={failed}"
    )
    return 1 if failed else 0
