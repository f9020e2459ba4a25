"""Silences in the store: add, expire and list them (``silences`` table, migrations 012, 017, 021).

Every change is a new version of the same ``silence_id`` in a ReplacingMergeTree keyed
by ``updated_at``, so expiring is an insert, never an UPDATE, and the same code works on
the embedded engine and on a server. Reads use FINAL: the latest version wins even
before the background merge has run.

Times are Unix epoch seconds (UTC). The clock is never read here: every function that
needs the time takes ``now``, so tests and replays decide it. Times are rounded to the
millisecond the table stores, so a :class:`Silence` returned here equals the one read back.

A silence that also mutes integrity findings (``integrity``) is refused here unless it
passes :func:`~trainguard.pipeline.alerts.config.integrity_silence_violation`; the worker
checks the same rule again on what it reads, since rows can be inserted by hand.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from trainguard.errors import ConfigError, StoreError
from trainguard.pipeline.alerts.config import (
    DEFAULT_MAX_INTEGRITY_SILENCE_S,
    Silence,
    integrity_silence_violation,
)
from trainguard.pipeline.alerts.matchers import Matcher, matchers_from_json, matchers_to_json
from trainguard.pipeline.store.base import Store

__all__ = ["active_silences", "add_silence", "expire_silence", "fold_scope", "list_silences"]

_TABLE = "silences"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: The table stores milliseconds; this is the smallest window a silence can keep.
_MS = 0.001
_COLUMNS = (
    "silence_id, job_id, node, matchers, integrity, reason, created_by, updated_by, "
    "toUnixTimestamp64Milli(starts_at) AS starts_ms, toUnixTimestamp64Milli(ends_at) AS ends_ms, "
    "toUnixTimestamp64Milli(created_at) AS created_ms, "
    "toUnixTimestamp64Milli(updated_at) AS updated_ms"
)


@dataclass(frozen=True)
class _Version:
    """The latest stored version of a silence, with the bookkeeping a new version needs."""

    silence: Silence
    created_at: float
    updated_at: float


def add_silence(
    store: Store,
    *,
    job_id: str | None,
    node: str | None,
    starts_at: float,
    ends_at: float,
    reason: str,
    created_by: str,
    now: float,
    integrity: bool = False,
    max_integrity_s: float = DEFAULT_MAX_INTEGRITY_SILENCE_S,
    matchers: tuple[Matcher, ...] = (),
) -> Silence:
    """Store a new silence of ``job_id`` and/or ``node`` over ``[starts_at, ends_at)``.

    An empty ``job_id`` or ``node`` means any, like None; ``matchers`` narrow it further
    (all must hold). With matchers, ``job_id`` and ``node`` are stored as matchers too (see
    :func:`fold_scope`). With ``integrity`` it mutes integrity findings too. Raises
    :class:`ConfigError` naming the bad value when the silence matches everything, its
    window is empty or already over at ``now``, ``reason`` or ``created_by`` is blank, or
    it breaks the integrity silence rule (longer than ``max_integrity_s``).
    """
    for name, value in (("starts_at", starts_at), ("ends_at", ends_at), ("now", now)):
        _check_time(name, value)
    if not reason.strip():
        raise ConfigError("silence reason is empty; say why alerts are muted (e.g. a ticket)")
    if not created_by.strip():
        raise ConfigError("silence created_by is empty; expected who adds it")
    job_id, node, matchers = fold_scope(_any_as_none(job_id), _any_as_none(node), matchers)
    silence = Silence(
        silence_id=f"sil-{secrets.token_hex(4)}",
        job_id=job_id,
        node=node,
        starts_at=_ms(starts_at),
        ends_at=_ms(ends_at),
        reason=reason.strip(),
        created_by=created_by.strip(),
        integrity=integrity,
        updated_by=created_by.strip(),
        matchers=tuple(matchers),
    )
    refused = integrity_silence_violation(silence, max_integrity_s)
    if refused is not None:
        raise ConfigError(f"refused by the {refused}")
    if silence.ends_at <= now:
        raise ConfigError(
            f"silence ends_at={silence.ends_at!r} is not after now={now!r}; it would mute nothing"
        )
    store.insert_rows(_TABLE, [_row(silence, created_at=_ms(now), updated_at=_ms(now))])
    return silence


def fold_scope(job_id: str | None, node: str | None, matchers: Sequence[Matcher]
               ) -> tuple[str | None, str | None, tuple[Matcher, ...]]:
    """A silence with matchers keeps its job and node as matchers, its columns empty.

    A worker from before migration 021 reads only the job and node columns: given a
    ``check=gpu_throttled`` silence of ``node-07`` as the column ``node``, it would mute
    every alert of that node. With empty columns it refuses the row (no job, no node)
    instead and keeps the silences it had: it mutes less, never more. Without matchers
    the columns are used, as every worker reads them.
    """
    if not matchers:
        return job_id, node, ()
    scope = [Matcher(name, "=", value) for name, value in (("job_id", job_id), ("node", node))
             if value is not None]
    return None, None, tuple(dict.fromkeys([*scope, *matchers]))


def expire_silence(store: Store, silence_id: str, now: float, by: str) -> Silence:
    """End silence ``silence_id`` at ``now`` as user ``by``; return its new version.

    One that has not begun yet is cancelled: it keeps a 1 ms window ending at ``now``, so
    it stays a valid :class:`Silence` on the record and matches nothing from ``now`` on.
    Raises :class:`ConfigError` if the id is unknown or the silence is already over.
    """
    _check_time("now", now)
    if not by.strip():
        raise ConfigError("silence expiry by is empty; expected who ends it")
    if not _ID.fullmatch(silence_id):
        raise ConfigError(f"invalid silence id {silence_id!r}; expected e.g. sil-1a2b3c4d")
    found = _versions(store, f"silence_id = '{silence_id}'")
    if not found:
        raise ConfigError(
            f"unknown silence {silence_id!r}; `trainguard silence list --all` shows the ids"
        )
    current = found[0]
    old = current.silence
    if old.ends_at <= now:
        raise ConfigError(f"silence {silence_id!r} is already over (ends_at={old.ends_at!r})")
    ends_at = _ms(now)
    starts_at = old.starts_at if old.starts_at < ends_at else ends_at - _MS
    new = replace(old, starts_at=_ms(starts_at), ends_at=ends_at, updated_by=by.strip())
    # The version must exceed the stored one even if ``now`` is behind it (a clock step
    # back, or two changes in one millisecond), or FINAL would keep the old version.
    updated_at = max(_ms(now), _ms(current.updated_at + _MS))
    store.insert_rows(_TABLE, [_row(new, created_at=current.created_at, updated_at=updated_at)])
    return new


def list_silences(store: Store, now: float, include_expired: bool = False) -> list[Silence]:
    """The silences not over at ``now`` (all of them with ``include_expired``), by start."""
    if not include_expired:
        return active_silences(store, now)
    return [v.silence for v in _versions(store, None)]


def active_silences(store: Store, now: float) -> list[Silence]:
    """The silences covering ``now`` or starting later, by start.

    The alert lifecycle needs both: it matches a silence against when an episode starts,
    so one planned for tonight must already be known when tonight comes.
    """
    _check_time("now", now)
    return [v.silence for v in _versions(store, f"ends_ms > {now * 1000!r}")]


def _versions(store: Store, where: str | None) -> list[_Version]:
    # FINAL in the inner query, the filter outside: a filter beside FINAL could see an
    # older version of a row whose latest version it would reject.
    outer = f" WHERE {where}" if where else ""
    sql = (
        f"SELECT * FROM (SELECT {_COLUMNS} FROM {{database}}.{_TABLE} FINAL){outer} "
        "ORDER BY starts_ms, silence_id"
    )
    return [_version(row) for row in store.query(sql).dicts()]


def _version(row: dict[str, object]) -> _Version:
    try:
        silence = Silence(
            silence_id=str(row["silence_id"]),
            job_id=str(row["job_id"]) or None,
            node=str(row["node"]) or None,
            starts_at=_from_ms(row["starts_ms"]),
            ends_at=_from_ms(row["ends_ms"]),
            reason=str(row["reason"]),
            created_by=str(row["created_by"]),
            integrity=bool(int(str(row["integrity"]))),
            updated_by=str(row["updated_by"]),
            matchers=matchers_from_json(str(row.get("matchers") or "")),
        )
    except ConfigError as exc:
        raise StoreError(f"stored silence {row.get('silence_id')!r} is invalid: {exc}") from None
    return _Version(silence, _from_ms(row["created_ms"]), _from_ms(row["updated_ms"]))


def _row(silence: Silence, *, created_at: float, updated_at: float) -> dict[str, object]:
    return {
        "silence_id": silence.silence_id,
        "job_id": silence.job_id or "",
        "node": silence.node or "",
        "matchers": matchers_to_json(silence.matchers),
        "integrity": int(silence.integrity),
        "starts_at": silence.starts_at,
        "ends_at": silence.ends_at,
        "reason": silence.reason,
        "created_by": silence.created_by,
        "updated_by": silence.updated_by,
        "created_at": created_at,
        "updated_at": updated_at,
    }


def _any_as_none(value: str | None) -> str | None:
    # The table stores "any" as ''; a blank name from a caller means the same.
    return (value.strip() or None) if value is not None else None


def _check_time(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r}; expected Unix epoch seconds")
    if value < 0:
        raise ConfigError(f"{name}={value!r}; expected Unix epoch seconds >= 0")


def _ms(t: float) -> float:
    return round(t * 1000) / 1000


def _from_ms(value: object) -> float:
    # 64-bit integers come back as JSON strings (ClickHouse quotes them by default).
    return int(str(value)) / 1000
