"""The ``trainguard`` command line: :func:`main` and one module per subcommand.

The top layer: it may import everything below it (agents, pipeline, local services,
demo, eval, Grafana, reports); nothing below imports it. Each subcommand module exposes
``register(subparsers)`` and imports its heavy dependencies inside the handler, so a GPU
node with only ``trainguard[agent]`` installed can run ``trainguard agent``.
"""

from trainguard.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
