"""``trainguard db grants --print|--apply``: least-privilege users on a ClickHouse server.

Renders ``infra/clickhouse/grants.sql`` for the store's database. Each account's password
comes from ``--password-file ACCOUNT=PATH`` or else from its environment variable, never
from the command line; only salted SHA-256 hashes reach the printed or applied SQL.
``--print`` shows the SQL (placeholders stay where a password is missing); ``--apply``
runs it on the server named by ``--store``, as that URL's user (one with ACCESS
MANAGEMENT, e.g. ``default``), and needs every password.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from trainguard import envvars
from trainguard.cli._common import store_url
from trainguard.errors import ConfigError

if TYPE_CHECKING:
    from trainguard.pipeline.store.grants import Credential

__all__ = ["PASSWORD_ENV", "add_grants_parser"]

#: Where each account's password is read from when no ``--password-file`` names it.
PASSWORD_ENV = {
    "admin": envvars.CLICKHOUSE_ADMIN_PASSWORD,
    "worker": envvars.CLICKHOUSE_WORKER_PASSWORD,
    "ro": envvars.GRAFANA_RO_PASSWORD,
    "operator": envvars.CLICKHOUSE_OPERATOR_PASSWORD,
}


def add_grants_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], store: argparse.ArgumentParser
) -> None:
    """Add ``db grants`` to the ``db`` subcommands (``store`` carries ``--store``)."""
    envs = ", ".join(f"{a}: {e}" for a, e in PASSWORD_ENV.items())
    p = sub.add_parser(
        "grants", parents=[store], help="render or apply the server's least-privilege users",
        description="Users admin (migrations), worker (insert into the pipeline's tables), "
                    "ro (read-only: Grafana) and operator (silences), from "
                    "infra/clickhouse/grants.sql, for --store's database. Passwords come "
                    f"from --password-file or the environment ({envs}). The embedded store "
                    "(chdb) has no users: this is for a ClickHouse server.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--print", action="store_true", dest="print_sql",
                      help="print the SQL (hashes only; placeholders where a password is missing)")
    what.add_argument("--apply", action="store_true",
                      help="run it on the --store server as that URL's user (needs ACCESS "
                           "MANAGEMENT, e.g. default; its password from "
                           f"{envvars.CLICKHOUSE_PASSWORD})")
    p.add_argument("--prefix", default="trainguard",
                   help="prefix of user and role names (default: %(default)s)")
    p.add_argument("--password-file", action="append", default=[], metavar="ACCOUNT=PATH",
                   help="read ACCOUNT's password from the first line of PATH (repeatable)")
    p.set_defaults(func=_grants)


def _grants(args: argparse.Namespace) -> int:
    from trainguard.pipeline.store.grants import apply_grants, render_grants, user_name

    url = store_url(args.store)
    credentials = _credentials(args.password_file, os.environ)
    if args.print_sql:
        missing = [a for a in PASSWORD_ENV if a not in credentials]
        if missing:
            print(f"note: no password for {', '.join(missing)}: placeholders left in place; "
                  "set " + ", ".join(PASSWORD_ENV[a] for a in missing) + " or --password-file",
                  file=sys.stderr)
        print(render_grants(url.database, credentials, prefix=args.prefix, partial=True))
        return 0
    if url.embedded:
        raise ConfigError(
            f"db grants --apply needs a ClickHouse server (--store http(s)://USER@HOST:PORT/DB); "
            f"{url} is the embedded engine, which has no users")
    sql = render_grants(url.database, credentials, prefix=args.prefix)
    from trainguard.pipeline.store import open_store

    with open_store(url) as store:
        n = apply_grants(store, sql)
    users = ", ".join(user_name(a, args.prefix) for a in PASSWORD_ENV)
    print(f"applied {n} statements to {url}: users {users}")
    return 0


def _credentials(files: list[str], environ: Mapping[str, str]) -> dict[str, Credential]:
    """Each account's credential: from ``ACCOUNT=PATH`` in ``files``, else its variable."""
    from trainguard.pipeline.store.grants import Credential
    from trainguard.pipeline.store.url import Secret

    passwords: dict[str, str] = {}
    for item in files:
        account, sep, path = item.partition("=")
        if not sep or account not in PASSWORD_ENV or not path:
            raise ConfigError(f"--password-file {item!r}; expected ACCOUNT=PATH with ACCOUNT "
                              f"one of: {', '.join(PASSWORD_ENV)}")
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"--password-file {account}: cannot read {path}: "
                              f"{exc.strerror}") from None
        if not lines or not lines[0]:
            raise ConfigError(f"--password-file {account}: {path} has no password on its "
                              "first line")
        passwords[account] = lines[0]
    for account, env in PASSWORD_ENV.items():
        if account not in passwords and environ.get(env):
            passwords[account] = environ[env]
    out: dict[str, Credential] = {}
    for account, password in passwords.items():
        try:
            out[account] = Credential.from_password(Secret(password))
        except ConfigError as exc:
            raise ConfigError(f"account {account}: {exc}") from None
    return out
