"""Change approvals in the store (``change_approvals``, migration 022), on a real chdb database."""

from __future__ import annotations

import re

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.approvals import (
    active_approvals,
    approve_change,
    list_approvals,
    revoke_approval,
)
from trainguard.pipeline.store import ChdbStore, migrate

T0 = 1_700_000_000.0
FP = "9f3a1c0e52d1b7a4"


@pytest.fixture
def store(chdb_store: ChdbStore) -> ChdbStore:
    migrate(chdb_store)
    return chdb_store


def test_an_approval_reads_back_equal_with_who_when_and_why(store: ChdbStore) -> None:
    a = approve_change(store, job_id=" job-1 ", fingerprint=FP, reason=" CHG-118 ",
                       created_by="alice", now=T0 + 0.0004)
    assert re.fullmatch(r"apr-[0-9a-f]{8}", a.approval_id)
    assert (a.job_id, a.reason, a.created_by, a.created_at) == ("job-1", "CHG-118", "alice", T0)
    assert list_approvals(store) == [a] and active_approvals(store, T0) == [a]
    assert list_approvals(store, "job-2") == []


def test_a_revoked_approval_is_kept_on_record_but_no_longer_in_force(store: ChdbStore) -> None:
    a = approve_change(store, job_id="job-1", fingerprint=FP, reason="CHG-118",
                       created_by="alice", now=T0)
    revoked = revoke_approval(store, a.approval_id, T0 - 5, by="bob")  # clock behind: still wins
    assert revoked.revoked and revoked.updated_by == "bob" and revoked.created_by == "alice"
    assert active_approvals(store, T0) == []
    assert list_approvals(store, include_revoked=True) == [revoked]
    with pytest.raises(ConfigError, match="already revoked"):
        revoke_approval(store, a.approval_id, T0 + 1, by="bob")


@pytest.mark.parametrize(("fields", "message"), [
    ({"reason": " "}, "reason is empty"),
    ({"created_by": ""}, "created_by is empty"),
    ({"job_id": ""}, "the job is empty"),
    ({"fingerprint": "x'; DROP TABLE t"}, "is not a fingerprint"),
    ({"now": float("nan")}, "expected Unix epoch seconds"),
])
def test_a_bad_approval_is_refused_naming_the_value(store: ChdbStore, fields, message) -> None:
    kw = dict(job_id="job-1", fingerprint=FP, reason="CHG-118", created_by="alice", now=T0)
    kw.update(fields)
    with pytest.raises(ConfigError, match=message):
        approve_change(store, **kw)
    assert list_approvals(store, include_revoked=True) == []


def test_revoking_an_unknown_or_malformed_id_is_refused(store: ChdbStore) -> None:
    with pytest.raises(ConfigError, match="unknown approval 'apr-00000000'"):
        revoke_approval(store, "apr-00000000", T0, by="bob")
    with pytest.raises(ConfigError, match="invalid approval id"):
        revoke_approval(store, "sil-1234", T0, by="bob")
