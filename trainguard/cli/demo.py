"""``trainguard demo``: the whole pipeline on one machine with no configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainguard import envvars
from trainguard.cli._common import add_bootstrap, add_env_option, add_topic_prefix

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    from trainguard.agents.sim import DEFAULT_SCENARIO

    p = subparsers.add_parser(
        "demo", help="run broker + worker + a simulated training job with an injected sabotage"
    )
    p.add_argument("--nodes", type=int, default=4, help="simulated nodes (default: %(default)s)")
    p.add_argument("--gpus", type=int, default=8, help="GPUs per node (default: %(default)s)")
    p.add_argument("--duration", type=int, default=30,
                   help="wall-clock seconds to run (default: %(default)s)")
    p.add_argument("--speed", type=float, default=10.0,
                   help="seconds of training per wall-clock second (default: %(default)s)")
    p.add_argument("--scenario", default=DEFAULT_SCENARIO,
                   help="scenario injected half-way, or 'none' (default: %(default)s)")
    p.add_argument("--list-scenarios", action="store_true",
                   help="list the sabotage and benign scenarios and exit")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("trainguard-data"),
        help="where the local broker and the embedded store live (default: %(default)s)",
    )
    add_bootstrap(p, default="")
    add_env_option(
        p, "--store", envvars.STORE_URL, "", "store URL; empty means chdb://<data-dir>/store"
    )
    add_topic_prefix(p)
    p.add_argument("--plain", dest="secure", action="store_false",
                   help="run the local broker without TLS, SASL users and ACLs (default: "
                        "secured; agents may only write telemetry, the worker verdicts)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from trainguard.demo import DemoOptions, run_demo

    if args.log_level == "INFO":
        # The demo prints its own progress lines; routine INFO logs would bury them.
        logging.getLogger().setLevel(logging.WARNING)

    if args.list_scenarios:
        from trainguard.agents.sim import SCENARIOS

        for name, cls in SCENARIOS.items():
            print(f"{name:<22} {cls.kind:<9} {cls.description}")
        return 0
    opts = DemoOptions(
        nodes=args.nodes,
        gpus=args.gpus,
        duration_s=args.duration,
        speed=args.speed,
        scenario=None if args.scenario == "none" else args.scenario,
        data_dir=args.data_dir,
        bootstrap=args.bootstrap,
        store=args.store,
        topic_prefix=args.topic_prefix,
        secure=args.secure,
    )
    return run_demo(opts)
