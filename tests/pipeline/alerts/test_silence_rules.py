"""The integrity silence rule: integrity findings stay loud unless a silence is accountable.

A silence mutes integrity findings only when it is marked ``integrity`` and has a reason,
a creator and an end at most ``max_integrity_silence_s`` after its start; the CLI refuses
any other (tests/trainguard/cli), and the worker ignores, logs and counts one written to
the table by hand, while it keeps muting the other categories as before.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from tests.pipeline.alerts.test_lifecycle import T0, finding
from tests.pipeline.alerts.test_stream import Store, _job
from tests.pipeline.fakes import Clock, FakeTopic, run
from trainguard.errors import ConfigError
from trainguard.pipeline.alerts import AlertLifecycle, AlertLifecycleConfig, Silence
from trainguard.pipeline.alerts.alert_job import AlertJob
from trainguard.pipeline.alerts.config import integrity_silence_violation
from trainguard.pipeline.alerts.silences import active_silences
from trainguard.pipeline.store import ChdbStore, migrate
from trainguard.schemas.records import Finding

HOUR = 3600.0
#: A job-wide silence that keeps the rule: reason, creator, two hours.
GOOD = Silence("s-int", "job-1", None, T0 - 60, T0 + 2 * HOUR, "OPS-7 new checkpoint format",
               "alice", integrity=True, updated_by="alice")


def hardware(**kw: Any) -> Finding:
    return finding(check="node_idle", category="hardware", finding_id="f-hw", **kw)


def fire(silences: list[Silence], found: Finding,
         config: AlertLifecycleConfig | None = None) -> tuple[str, str | None]:
    lc = AlertLifecycle(config)
    lc.set_silences(silences)
    [alert] = lc.observe_findings([found])
    return alert.severity, alert.labels.get("silenced")


def test_a_plain_silence_of_the_job_leaves_integrity_findings_paging() -> None:
    plain = replace(GOOD, silence_id="s-plain", integrity=False)
    assert fire([plain], finding()) == ("page", None)
    assert fire([plain], hardware()) == ("info", "s-plain")  # as before for the rest


def test_an_accountable_integrity_silence_mutes_integrity_findings() -> None:
    assert fire([GOOD], finding()) == ("info", "s-int")
    assert fire([GOOD], hardware()) == ("info", "s-int")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"reason": ""}, "has no reason"),
        ({"reason": "   "}, "has no reason"),
        ({"created_by": ""}, "has no creator"),
        ({"ends_at": T0 - 60 + 24 * HOUR + 1}, "lasts 86401 s"),
        ({"starts_at": 0.0}, "lasts"),  # "no expiry": a window from the epoch
    ],
)
def test_an_integrity_silence_breaking_the_rule_mutes_no_integrity_finding(
    change: dict[str, Any], why: str
) -> None:
    bad = replace(GOOD, **change)
    violation = integrity_silence_violation(bad, 24 * HOUR)
    assert violation is not None and why in violation
    assert violation.startswith("integrity silence rule:")
    assert fire([bad], finding()) == ("page", None)


def test_the_longest_integrity_silence_comes_from_the_lifecycle_config() -> None:
    short = AlertLifecycleConfig(max_integrity_silence_s=HOUR)
    assert fire([GOOD], finding(), short) == ("page", None)  # GOOD lasts about 2 h
    assert fire([replace(GOOD, ends_at=T0 + HOUR - 60)], finding(), short) == ("info", "s-int")


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan")])
def test_a_bad_longest_integrity_silence_is_refused_naming_the_field(value: float) -> None:
    with pytest.raises(ConfigError, match="max_integrity_silence_s"):
        AlertLifecycleConfig(max_integrity_silence_s=value)


def _refreshed(silences: list[Silence], store: Store | None = None) -> AlertJob:
    store = store if store is not None else Store()
    store.silences = silences
    job = _job(store, FakeTopic(), FakeTopic(), Clock(T0))
    run(job.refresh_silences())
    return job


def test_the_worker_logs_and_counts_a_broken_integrity_silence_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = replace(GOOD, silence_id="s-bad", reason="")
    caplog.set_level(logging.WARNING, logger="trainguard.pipeline.alerts.alert_job")
    store = Store()
    job = _refreshed([bad, GOOD], store)
    assert job.silences_refused == 1
    run(job.refresh_silences())  # the same row again: counted, not logged again
    warned = [r.getMessage() for r in caplog.records if "s-bad" in r.getMessage()]
    assert len(warned) == 1 and "has no reason" in warned[0]
    assert job.silences_refused == 1
    store.silences = [GOOD]  # the bad one expired
    run(job.refresh_silences())
    assert job.silences_refused == 0


def test_a_broken_integrity_silence_still_mutes_hardware_on_the_worker() -> None:
    bad = replace(GOOD, silence_id="s-bad", created_by="")
    lc = _refreshed([bad]).lifecycle(0)
    [integrity] = lc.observe_findings([finding()])
    [hw] = lc.observe_findings([hardware()])
    assert (integrity.severity, "silenced" in integrity.labels) == ("page", False)
    assert (hw.severity, hw.labels["silenced"]) == ("info", "s-bad")


def test_a_hand_inserted_integrity_row_without_reason_does_not_mute_integrity(
    chdb_store: ChdbStore,
) -> None:
    # What someone with INSERT on the table could write, bypassing `trainguard silence`.
    migrate(chdb_store)
    chdb_store.insert_rows("silences", [{
        "silence_id": "sil-byhand", "job_id": "job-1", "node": "", "integrity": 1,
        "starts_at": T0 - 60, "ends_at": 4_000_000_000.0, "reason": "", "created_by": "",
        "created_at": T0 - 60, "updated_at": T0 - 60,
    }])
    [stored] = active_silences(chdb_store, T0)
    assert stored.integrity and stored.reason == "" and stored.updated_by == ""
    job = _refreshed([stored])
    assert job.silences_refused == 1
    [alert] = job.lifecycle(0).observe_findings([finding()])
    assert alert.severity == "page" and "silenced" not in alert.labels
