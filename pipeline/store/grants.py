"""Least-privilege users on a ClickHouse server: render and apply ``infra/clickhouse/grants.sql``.

The SQL is a template on the store's database, a name prefix for users and roles, and per
account a salted SHA-256 of its password (ClickHouse's ``sha256_hash ... SALT``), so that
neither the file nor what is rendered from it ever holds a password. Four accounts:
``admin`` (migrations), ``worker``, ``ro`` (Grafana and other readers) and ``operator``
(silences, change approvals); the file says what each may do.

The embedded engine (chdb) has no users: it is one process owning a directory, and the
directory's file permissions are its access control. These grants are for servers only.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainguard.errors import ConfigError, StoreError
from trainguard.pipeline.store.base import Store
from trainguard.pipeline.store.sqltext import split_statements
from trainguard.pipeline.store.url import Secret, validate_identifier
from trainguard.resources import infra_candidates

__all__ = [
    "ACCOUNTS",
    "DEFAULT_PREFIX",
    "Credential",
    "apply_grants",
    "grants_template",
    "render_grants",
    "user_name",
]

log = logging.getLogger(__name__)

#: The accounts the template creates, in the order it creates them.
ACCOUNTS = ("admin", "worker", "ro", "operator")
DEFAULT_PREFIX = "trainguard"
#: A placeholder left in rendered SQL, e.g. ``{worker_sha256}``.
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Credential:
    """What the server stores for one account: SHA-256 of password+salt, and the salt."""

    sha256_hex: str
    salt_hex: str

    @classmethod
    def from_password(cls, password: Secret, salt_hex: str | None = None) -> Credential:
        """Hash ``password`` with ``salt_hex`` (a fresh random salt by default)."""
        plain = password.reveal()
        if len(plain) < 12:
            raise ConfigError(
                f"password of {len(plain)} characters is too short; expected at least 12")
        salt = salt_hex if salt_hex is not None else secrets.token_hex(16)
        digest = hashlib.sha256((plain + salt).encode()).hexdigest()
        return cls(sha256_hex=digest, salt_hex=salt)


def user_name(account: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The server user of ``account`` (one of :data:`ACCOUNTS`), e.g. ``trainguard_worker``."""
    if account not in ACCOUNTS:
        raise ConfigError(f"unknown account {account!r}; expected one of: {', '.join(ACCOUNTS)}")
    return f"{validate_identifier(prefix, 'user prefix')}_{account}"


def grants_template(path: Path | None = None) -> str:
    """The text of ``infra/clickhouse/grants.sql`` (or of ``path``)."""
    if path is not None:
        return path.read_text(encoding="utf-8")
    for candidate in infra_candidates("clickhouse", "grants.sql"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise StoreError("infra/clickhouse/grants.sql not found in the package or the checkout")


def render_grants(
    database: str,
    credentials: Mapping[str, Credential],
    *,
    prefix: str = DEFAULT_PREFIX,
    template: str | None = None,
    partial: bool = False,
) -> str:
    """The grants SQL for ``database``, with each account's credential filled in.

    Every account of :data:`ACCOUNTS` needs a credential, unless ``partial``: then the
    placeholders of the missing ones stay in the text (for review, not for running).
    Raises :class:`ConfigError` naming a bad database, prefix or account.
    """
    validate_identifier(database)
    validate_identifier(prefix, "user prefix")
    unknown = sorted(set(credentials) - set(ACCOUNTS))
    if unknown:
        raise ConfigError(
            f"unknown account(s) {', '.join(unknown)}; expected some of: {', '.join(ACCOUNTS)}")
    missing = [a for a in ACCOUNTS if a not in credentials]
    if missing and not partial:
        raise ConfigError(f"no password for account(s) {', '.join(missing)}")
    values = {"database": database, "prefix": prefix}
    for account, cred in credentials.items():
        for value in (cred.sha256_hex, cred.salt_hex):
            if not re.fullmatch(r"[0-9a-f]{2,128}", value):
                raise ConfigError(f"credential of {account!r} is not lower-case hex")
        values[f"{account}_sha256"] = cred.sha256_hex
        values[f"{account}_salt"] = cred.salt_hex
    text = template if template is not None else grants_template()

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    rendered = _PLACEHOLDER.sub(fill, text)
    left = sorted(set(_PLACEHOLDER.findall(rendered)))
    expected_left = {f"{a}_{k}" for a in missing for k in ("sha256", "salt")}
    stray = [name for name in left if name not in expected_left]
    if stray:
        raise ConfigError(f"grants template has unknown placeholder(s): {', '.join(stray)}")
    return rendered


def apply_grants(store: Store, sql: str) -> int:
    """Run every statement of rendered ``sql`` on ``store`` (a server); return how many ran.

    The store's user needs ACCESS MANAGEMENT and the privileges it grants (the server's
    ``default`` user has both). A statement the server refuses stops the run with a
    :class:`StoreError` naming it; the statements before it stay applied, and applying
    again is safe.
    """
    if _PLACEHOLDER.search(sql):
        raise ConfigError("grants SQL still has placeholders; every account needs a password")
    statements = split_statements(sql)
    for n, statement in enumerate(statements, 1):
        try:
            store.command(statement)
        except StoreError as exc:
            # The statement's text holds only hashes; its first line names what failed.
            first = next(line for line in statement.splitlines()
                         if line.strip() and not line.lstrip().startswith("--"))
            raise StoreError(f"grants statement {n}/{len(statements)} ({first}) failed: "
                             f"{exc}") from None
    log.info("grants applied statements=%d database=%s", len(statements), store.database)
    return len(statements)
