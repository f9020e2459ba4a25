"""``trainguard keys``: the fleet secret and per-node keys that authenticate agents' messages.

- ``keys init``: create the fleet secrets file (mode 0600) for the workers and this tool;
- ``keys enrol --node NAME --out FILE``: derive one node's key from the current secret and
  write it (mode 0600) for that node's agent (``--node-key-file``);
- ``keys rotate``: a new current secret; the old one stays as ``previous``, accepted by the
  workers until the next rotation: restart the workers, re-enrol every node, rotate again
  only after that;
- ``keys show``: the key ids in the file (never the secrets).

Keys are read from and written to files only; nothing secret is printed or passed as a flag.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from trainguard import envvars
from trainguard.cli._common import add_env_option, add_json_flag, print_json

__all__ = ["DEFAULT_FLEET_SECRET_FILE", "register"]

DEFAULT_FLEET_SECRET_FILE = "./trainguard-data/keys/fleet-secrets.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``keys`` command and its subcommands."""
    p = subparsers.add_parser("keys", help="fleet secret and per-node keys (message MACs)")
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")

    init = sub.add_parser("init", help="create the fleet secrets file (mode 0600)")
    _fleet_file(init)
    init.add_argument("--force", action="store_true",
                      help="replace an existing file (every enrolled node key stops working)")
    init.set_defaults(func=_init)

    enrol = sub.add_parser("enrol", help="write one node's key file (mode 0600)")
    _fleet_file(enrol)
    enrol.add_argument("--node", required=True, help="the node's name, as its agent reports it")
    enrol.add_argument("--out", type=Path, required=True,
                       help="where to write the node's key (copy it to the node, mode 0600)")
    enrol.set_defaults(func=_enrol)

    rotate = sub.add_parser("rotate", help="new current secret; the old one stays as previous")
    _fleet_file(rotate)
    rotate.set_defaults(func=_rotate)

    show = sub.add_parser("show", help="the key ids in the fleet secrets file")
    _fleet_file(show)
    add_json_flag(show, 'the key ids ({"file", "current", "previous"})')
    show.set_defaults(func=_show)


def _fleet_file(parser: argparse.ArgumentParser) -> None:
    add_env_option(parser, "--fleet-secret-file", envvars.FLEET_SECRET_FILE,
                   DEFAULT_FLEET_SECRET_FILE, "the fleet secrets file")


def _init(args: argparse.Namespace) -> int:
    from trainguard.schemas.keyfiles import init_fleet_secrets

    path = Path(args.fleet_secret_file)
    secret = init_fleet_secrets(path, force=args.force)
    print(f"keys init: wrote {path} (mode 0600) kid={secret.kid}; give it to the workers "
          f"(--fleet-secret-file) and enrol each node with `trainguard keys enrol`")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    from trainguard.errors import ConfigError
    from trainguard.schemas.keyfiles import enrol_node
    from trainguard.schemas.records import NAME_PATTERN

    if not re.match(NAME_PATTERN, args.node):
        raise ConfigError(f"bad node name {args.node!r}; expected {NAME_PATTERN}")
    key = enrol_node(Path(args.fleet_secret_file), args.node, args.out)
    print(f"keys enrol: wrote {args.out} (mode 0600) node={key.node} kid={key.kid}; install it "
          "on the node and pass it to the agent with --node-key-file")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from trainguard.schemas.keyfiles import rotate_fleet_secrets

    path = Path(args.fleet_secret_file)
    new, old = rotate_fleet_secrets(path)
    print(f"keys rotate: {path} current kid={new.kid}, previous kid={old.kid}; restart the "
          "workers, then re-enrol every node (workers accept both ids until the next rotation)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from trainguard.schemas.keyfiles import read_fleet_secrets

    secrets = read_fleet_secrets(Path(args.fleet_secret_file))
    names = ("current", "previous")
    if args.json:
        kids = dict.fromkeys(names) | {n: s.kid for n, s in zip(names, secrets, strict=False)}
        print_json({"file": args.fleet_secret_file, **kids})
        return 0
    for name, secret in zip(names, secrets, strict=False):
        print(f"{name} kid={secret.kid}")
    return 0
