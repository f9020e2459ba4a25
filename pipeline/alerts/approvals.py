"""Change approvals: sanctioned code/env or seed changes of a job (``change_approvals``, 022).

A restart into other code is how a legitimate deployment looks and how a saboteur's
looks too; the worker cannot tell them apart, people can. ``trainguard change approve
--job J --fingerprint F --reason R`` records that fingerprint ``F`` is sanctioned for job
``J``, with who (the operating-system user the CLI ran as) and why. The alert lifecycle
turns a finding of an :data:`APPROVABLE_CHECKS` check whose evidence ``fingerprint`` is
approved for its job into severity ``info`` (label ``approved=<approval_id>``), whether
the approval came before the finding or after it paged
(:meth:`~trainguard.pipeline.alerts.lifecycle.AlertLifecycle.set_approvals`).

Store layout as for silences (:mod:`~trainguard.pipeline.alerts.silences`): every change
is a new version of the same ``approval_id`` in a ReplacingMergeTree keyed by
``updated_at``, so revoking is an insert; reads use FINAL. The clock is never read here:
every function that needs the time takes ``now``.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from trainguard.errors import ConfigError, StoreError

if TYPE_CHECKING:  # the store package imports chdb: the CLI's import path stays light
    from trainguard.pipeline.store.base import Store

__all__ = [
    "APPROVABLE_CHECKS", "Approval", "active_approvals", "approval_for", "approve_change",
    "list_approvals", "revoke_approval",
]

#: Checks whose finding names a fingerprint a person may sanction (evidence ``fingerprint``).
APPROVABLE_CHECKS = frozenset({"code_changed", "restart_divergence"})

_TABLE = "change_approvals"
_ID = re.compile(r"apr-[0-9a-f]{8}")
#: What a fingerprint may look like: hex digests, or a trainer's own short names.
_FINGERPRINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_COLUMNS = (
    "approval_id, job_id, fingerprint, reason, revoked, created_by, updated_by, "
    "toUnixTimestamp64Milli(created_at) AS created_ms, "
    "toUnixTimestamp64Milli(updated_at) AS updated_ms"
)


@dataclass(frozen=True)
class Approval:
    """Fingerprint ``fingerprint`` is a sanctioned change of job ``job_id``."""

    approval_id: str
    job_id: str
    fingerprint: str
    reason: str
    created_by: str
    created_at: float
    revoked: bool = False
    #: Who wrote this version (the creator, or who revoked it).
    updated_by: str = ""
    updated_at: float = 0.0

    def covers(self, job_id: str | None, fingerprints: Sequence[str]) -> bool:
        """True if this (unrevoked) approval sanctions every one of ``fingerprints``."""
        return (not self.revoked and job_id == self.job_id and bool(fingerprints)
                and all(f == self.fingerprint for f in fingerprints))


def approval_for(approvals: Sequence[Approval], job_id: str | None, check: str,
                 evidence: Mapping[str, object]) -> Approval | None:
    """The approval that sanctions a finding of ``check`` with ``evidence``, if any.

    The evidence ``fingerprint`` may list several values (comma-separated: replica groups
    that changed to different seeds); each must be approved for the job.
    """
    if check not in APPROVABLE_CHECKS or job_id is None:
        return None
    value = evidence.get("fingerprint")
    if not isinstance(value, str) or not value:
        return None
    wanted = [v for v in value.split(",") if v]
    for fp in wanted:
        if not any(a.covers(job_id, [fp]) for a in approvals):
            return None
    return next(a for a in approvals if a.covers(job_id, [wanted[0]]))


def approve_change(store: Store, *, job_id: str, fingerprint: str, reason: str,
                   created_by: str, now: float) -> Approval:
    """Store the approval of ``fingerprint`` for ``job_id`` (ConfigError names a bad value)."""
    _check_time(now)
    job_id, fingerprint = job_id.strip(), fingerprint.strip()
    if not job_id:
        raise ConfigError("change approve: the job is empty; expected --job JOB_ID")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ConfigError(f"change approve: fingerprint {fingerprint!r} is not a fingerprint; "
                          "expected the value a code_changed finding shows (hex digest)")
    if not reason.strip():
        raise ConfigError("change approve: reason is empty; say why (a release, a ticket)")
    if not created_by.strip():
        raise ConfigError("change approve: created_by is empty; expected who approves it")
    at = _ms(now)
    approval = Approval(
        approval_id=f"apr-{secrets.token_hex(4)}", job_id=job_id, fingerprint=fingerprint,
        reason=reason.strip(), created_by=created_by.strip(), created_at=at,
        updated_by=created_by.strip(), updated_at=at)
    store.insert_rows(_TABLE, [_row(approval)])
    return approval


def revoke_approval(store: Store, approval_id: str, now: float, by: str) -> Approval:
    """Revoke approval ``approval_id`` as user ``by``; return its new version."""
    _check_time(now)
    if not by.strip():
        raise ConfigError("change revoke: by is empty; expected who revokes it")
    if not _ID.fullmatch(approval_id):
        raise ConfigError(f"invalid approval id {approval_id!r}; expected e.g. apr-1a2b3c4d")
    found = _read(store, f"approval_id = '{approval_id}'")
    if not found:
        raise ConfigError(f"unknown approval {approval_id!r}; `trainguard change list` shows "
                          "the ids")
    old = found[0]
    if old.revoked:
        raise ConfigError(f"approval {approval_id!r} is already revoked (by {old.updated_by})")
    # The version must exceed the stored one even if ``now`` is behind it, or FINAL keeps it.
    new = replace(old, revoked=True, updated_by=by.strip(),
                  updated_at=max(_ms(now), _ms(old.updated_at + 0.001)))
    store.insert_rows(_TABLE, [_row(new)])
    return new


def list_approvals(store: Store, job_id: str | None = None,
                   include_revoked: bool = False) -> list[Approval]:
    """Approvals (of one job), oldest first; revoked ones only with ``include_revoked``."""
    conditions = [] if include_revoked else ["revoked = 0"]
    if job_id is not None:
        conditions.append(f"job_id = '{_quote(job_id)}'")
    return _read(store, " AND ".join(conditions) or None)


def active_approvals(store: Store, now: float) -> list[Approval]:
    """The approvals in force (not revoked); ``now`` only for the alert job's read signature."""
    _check_time(now)
    return list_approvals(store)


def _read(store: Store, where: str | None) -> list[Approval]:
    # FINAL inside, the filter outside: a filter beside FINAL could see an older version.
    outer = f" WHERE {where}" if where else ""
    sql = (f"SELECT * FROM (SELECT {_COLUMNS} FROM {{database}}.{_TABLE} FINAL){outer} "
           "ORDER BY created_ms, approval_id")
    return [_approval(row) for row in store.query(sql).dicts()]


def _approval(row: dict[str, object]) -> Approval:
    try:
        return Approval(
            approval_id=str(row["approval_id"]), job_id=str(row["job_id"]),
            fingerprint=str(row["fingerprint"]), reason=str(row["reason"]),
            created_by=str(row["created_by"]), created_at=_from_ms(row["created_ms"]),
            revoked=bool(int(str(row["revoked"]))), updated_by=str(row["updated_by"]),
            updated_at=_from_ms(row["updated_ms"]))
    except (KeyError, ValueError) as exc:
        raise StoreError(f"stored approval {row.get('approval_id')!r} is invalid: {exc}") from None


def _row(a: Approval) -> dict[str, object]:
    return {"approval_id": a.approval_id, "job_id": a.job_id, "fingerprint": a.fingerprint,
            "reason": a.reason, "revoked": int(a.revoked), "created_by": a.created_by,
            "updated_by": a.updated_by, "created_at": a.created_at, "updated_at": a.updated_at}


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _check_time(value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise ConfigError(f"now={value!r}; expected Unix epoch seconds >= 0")


def _ms(t: float) -> float:
    return round(t * 1000) / 1000


def _from_ms(value: object) -> float:
    # 64-bit integers come back as JSON strings (ClickHouse quotes them by default).
    return int(str(value)) / 1000
