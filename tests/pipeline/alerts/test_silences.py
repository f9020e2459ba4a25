"""Silences in the store (:mod:`trainguard.pipeline.alerts.silences`), on a real chdb database."""

from __future__ import annotations

import re
from typing import Any

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts import Silence
from trainguard.pipeline.alerts.silences import (
    active_silences,
    add_silence,
    expire_silence,
    list_silences,
)
from trainguard.pipeline.store import ChdbStore, migrate

T0 = 1_700_000_000.0
HOUR = 3600.0


@pytest.fixture
def store(chdb_store: ChdbStore) -> ChdbStore:
    migrate(chdb_store)
    return chdb_store


def add(store: ChdbStore, **kw: Any) -> Silence:
    fields: dict[str, Any] = dict(
        job_id="job-1", node=None, starts_at=T0, ends_at=T0 + HOUR,
        reason="OPS-42 driver upgrade", created_by="alice", now=T0,
    )
    fields.update(kw)
    return add_silence(store, **fields)


def test_an_added_silence_reads_back_equal_with_a_short_id(store: ChdbStore) -> None:
    silence = add(store, node="node-03", ends_at=T0 + HOUR + 0.0004)  # below the ms kept
    assert re.fullmatch(r"sil-[0-9a-f]{8}", silence.silence_id)
    assert (silence.job_id, silence.node, silence.ends_at) == ("job-1", "node-03", T0 + HOUR)
    assert list_silences(store, T0) == [silence]


def test_a_blank_job_or_node_means_any(store: ChdbStore) -> None:
    silence = add(store, job_id="", node="node-03")
    assert silence.job_id is None
    [stored] = list_silences(store, T0)
    assert stored.job_id is None and stored.matches("any-job", "node-03", T0 + 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reason": "  "}, "reason is empty"),
        ({"created_by": ""}, "created_by is empty"),
        ({"job_id": None, "node": None}, "names neither job_id nor node"),
        ({"job_id": " ", "node": ""}, "names neither job_id nor node"),
        ({"ends_at": T0}, "is not after starts_at"),
        ({"starts_at": T0 - 2 * HOUR, "ends_at": T0 - HOUR}, "is not after now"),
        ({"now": float("nan")}, "now=nan"),
    ],
)
def test_an_invalid_silence_is_refused_and_not_stored(
    store: ChdbStore, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        add(store, **fields)
    assert list_silences(store, T0, include_expired=True) == []


def test_active_silences_are_those_covering_now_or_starting_later(store: ChdbStore) -> None:
    later = add(store, starts_at=T0 + 2 * HOUR, ends_at=T0 + 3 * HOUR)
    now_on = add(store, starts_at=T0 - HOUR, ends_at=T0 + HOUR, now=T0 - HOUR)
    over = add(store, starts_at=T0 - 2 * HOUR, ends_at=T0, now=T0 - 2 * HOUR)
    assert active_silences(store, T0) == [now_on, later]  # by start
    assert list_silences(store, T0) == [now_on, later]
    assert list_silences(store, T0, include_expired=True) == [over, now_on, later]
    assert active_silences(store, T0 + 3 * HOUR) == []


def test_expiring_ends_a_silence_now_and_keeps_its_history(store: ChdbStore) -> None:
    silence = add(store)
    expired = expire_silence(store, silence.silence_id, T0 + 600, by="bob")
    assert (expired.starts_at, expired.ends_at) == (T0, T0 + 600)
    assert active_silences(store, T0 + 601) == []
    assert list_silences(store, T0 + 601, include_expired=True) == [expired]
    raw = "SELECT count() FROM {database}.silences"
    assert int(store.query(raw).scalar()) == 2  # both versions are on the record


def test_expiring_wins_even_when_the_clock_is_behind_the_stored_version(
    store: ChdbStore,
) -> None:
    silence = add(store, now=T0 + 100)  # stored with updated_at = T0 + 100
    expired = expire_silence(store, silence.silence_id, T0 + 50, by="bob")
    assert list_silences(store, T0 + 60, include_expired=True) == [expired]
    assert expired.ends_at == T0 + 50


def test_expiring_a_planned_silence_cancels_it(store: ChdbStore) -> None:
    planned = add(store, starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR)
    cancelled = expire_silence(store, planned.silence_id, T0, by="bob")
    assert (cancelled.starts_at, cancelled.ends_at) == (T0 - 0.001, T0)
    assert not cancelled.matches("job-1", None, T0 + HOUR)
    assert active_silences(store, T0) == []


def test_expiring_an_unknown_or_ended_silence_is_an_error(store: ChdbStore) -> None:
    with pytest.raises(ConfigError, match="unknown silence 'sil-00000000'"):
        expire_silence(store, "sil-00000000", T0, by="bob")
    with pytest.raises(ConfigError, match="invalid silence id"):
        expire_silence(store, "x' OR 1=1 --", T0, by="bob")
    silence = add(store)
    expire_silence(store, silence.silence_id, T0 + 10, by="bob")
    with pytest.raises(ConfigError, match="already over"):
        expire_silence(store, silence.silence_id, T0 + 20, by="bob")


def test_an_integrity_silence_reads_back_with_who_added_it(store: ChdbStore) -> None:
    silence = add(store, integrity=True, ends_at=T0 + 24 * HOUR)
    assert silence.integrity and silence.updated_by == "alice"
    assert list_silences(store, T0) == [silence]


def test_an_integrity_silence_longer_than_the_limit_is_refused_naming_the_rule(
    store: ChdbStore,
) -> None:
    with pytest.raises(ConfigError, match=r"integrity silence rule.*lasts 86400\.5 s"):
        add(store, integrity=True, ends_at=T0 + 24 * HOUR + 0.5)
    with pytest.raises(ConfigError, match="integrity silence rule.*lasts 7200 s"):
        add(store, integrity=True, ends_at=T0 + 2 * HOUR, max_integrity_s=HOUR)
    assert list_silences(store, T0, include_expired=True) == []
    assert not add(store, ends_at=T0 + 30 * 24 * HOUR).integrity  # the rest: no limit


def test_expiring_records_who_ended_it_beside_who_added_it(store: ChdbStore) -> None:
    silence = add(store)
    expired = expire_silence(store, silence.silence_id, T0 + 60, by="bob")
    assert (expired.created_by, expired.updated_by) == ("alice", "bob")
    assert list_silences(store, T0 + 61, include_expired=True) == [expired]
    with pytest.raises(ConfigError, match="expected who ends it"):
        expire_silence(store, add(store).silence_id, T0 + 60, by=" ")
