"""The ``trainguard grafana push`` command: its flags, and a run of :func:`~.push.push`.

:func:`register_push` adds ``push`` to ``trainguard grafana``; the handler reads the
token and the read-only user's password from the environment, loads the dashboard JSON
files, and prints what the push did. The API it drives is :mod:`trainguard.grafana.push`.
``grafana_client`` is imported only when the command runs: the CLI must load without
the ``pipeline`` extra.
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlsplit, urlunsplit

from trainguard import envvars
from trainguard.cli._common import add_env_option, add_json_flag, print_json
from trainguard.errors import ConfigError
from trainguard.grafana.push import (
    _redact,
    clickhouse_datasource,
    find_dashboards_dir,
    load_dashboards,
    push,
)

__all__ = ["register_push"]

_TIMEOUT_S = 10.0


def register_push(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``push`` to the subcommands of ``trainguard grafana``."""
    p = subparsers.add_parser(
        "push", help="create or update trainguard's folder, data source and dashboards",
        description="Push the dashboards, their folder and the ClickHouse data source into a "
                    "running Grafana through its HTTP API. Idempotent: only what differs is "
                    "written, so dashboards gain no versions when nothing changed.")
    add_env_option(p, "--url", envvars.GRAFANA_URL, "http://localhost:3000", "Grafana's base URL")
    # Not add_env_option: its help shows the default, and this one is a secret.
    p.add_argument("--token", default=None,
                   help="service account token with the Admin role; never printed (env: "
                        f"{envvars.GRAFANA_TOKEN}, better than the flag, which `ps` shows)")
    p.add_argument("--dashboards", default=None, metavar="DIR",
                   help="directory of dashboard JSON files (default: infra/grafana/dashboards "
                        "of the checkout, else the copy installed with trainguard)")
    p.add_argument("--datasource-url", default="http://clickhouse:8123",
                   help="ClickHouse HTTP URL as Grafana's server reaches it "
                        "(default: %(default)s)")
    p.add_argument("--database", default="trainguard",
                   help="ClickHouse database (default: %(default)s)")
    p.add_argument("--ro-user", default="trainguard_ro",
                   help="read-only ClickHouse user for Grafana (default: %(default)s)")
    p.add_argument("--ro-password-env", default=envvars.GRAFANA_RO_PASSWORD, metavar="VAR",
                   help="environment variable holding that user's password; unset means no "
                        "password (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   help="read Grafana and print what would change; write nothing")
    add_json_flag(p, 'what the push did or would do ({"url", "dry_run", "items": [{"kind", '
                     '"uid", "title", "action", "version", "detail"}], "counts"})')
    p.set_defaults(func=_push_command)


def _push_command(args: argparse.Namespace) -> int:
    from grafana_client import GrafanaApi

    url = _grafana_url(args.url)
    token = args.token or os.environ.get(envvars.GRAFANA_TOKEN)
    if not token:
        raise ConfigError(f"no Grafana token; set {envvars.GRAFANA_TOKEN} (or pass --token) to a "
                          "service account token with the Admin role")
    dashboards = load_dashboards(find_dashboards_dir(args.dashboards))
    password = os.environ.get(args.ro_password_env) or None
    datasource = clickhouse_datasource(args.datasource_url, database=args.database,
                                       user=args.ro_user, password=password)
    api = GrafanaApi.from_url(url, credential=token, timeout=_TIMEOUT_S)
    report = push(api, dashboards=dashboards, datasource=datasource, dry_run=args.dry_run)
    if args.json:
        counts = {a: len(report.with_action(a)) for a in ("created", "updated", "unchanged")}
        print_json({"url": url, "dry_run": report.dry_run, "items": report.items,
                    "counts": counts})
        return 0
    print(f"Grafana at {url}:")
    for line in report.lines():
        print(f"  {line}")
    return 0


def _grafana_url(raw: str) -> str:
    """Check Grafana's URL; give a sub-path a trailing slash (see below)."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"Grafana URL {_redact(raw)!r}; expected http(s)://HOST[:PORT][/PATH]")
    if parts.username or parts.password:
        raise ConfigError(f"Grafana URL {_redact(raw)!r} carries credentials; pass the token "
                          f"in {envvars.GRAFANA_TOKEN} instead")
    # grafana-client joins the path and "api" without a slash: /grafana would become
    # /grafanaapi.
    if parts.path and not parts.path.endswith("/"):
        parts = parts._replace(path=parts.path + "/")
    return urlunsplit(parts)
