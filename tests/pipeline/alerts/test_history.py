"""Alert history read back from the store (trainguard.pipeline.alerts.history), real chdb."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts import AlertLifecycle
from trainguard.pipeline.alerts.history import delivered_keys, open_alerts, recent_alerts
from trainguard.pipeline.sinks.rows import rows_for
from trainguard.pipeline.store import ChdbStore, migrate
from trainguard.schemas.records import Alert, Finding

T0 = 1_700_000_000.0


@pytest.fixture
def store(chdb_store: ChdbStore) -> ChdbStore:
    migrate(chdb_store)
    return chdb_store


def alert(fingerprint: str = "fp-1", start: float = T0, **kw: Any) -> Alert:
    fields: dict[str, Any] = dict(
        alert_id=f"{fingerprint}-{round(start * 1000)}", fingerprint=fingerprint,
        status="firing", severity="page", check="param_divergence", summary="rank 6 differs",
        cluster="c1", ts=start, starts_at=start, job_id="job-1", node="node-00", rank=6,
        gpu_index=3, evidence={"replicas": 31.0, "observed": "94ebc174", "step": None},
        labels={"severity": "page", "job_id": "job-1"},
        runbook_url="https://trainguard.example/runbooks/param_divergence",
        dashboard_url="https://grafana.example/d/trainguard-job?var-job=job-1",
    )
    fields.update(kw)
    return Alert(**fields)


def resolved(a: Alert, at: float) -> Alert:
    return msgspec.structs.replace(a, status="resolved", ts=at, ends_at=at)


def store_alerts(store: ChdbStore, *alerts: Alert) -> None:
    for a in alerts:
        store.insert_rows("alerts", [row for _, row in rows_for(a)])


def test_an_open_alert_is_rebuilt_whole_from_its_row(store: ChdbStore) -> None:
    firing = alert()
    store_alerts(store, firing)
    assert open_alerts(store, T0 - 60) == [firing]


def test_lifecycle_alerts_round_trip_through_the_store(store: ChdbStore) -> None:
    finding = Finding(
        finding_id="f-1", cluster="c1", job_id="job-1", check="param_divergence",
        category="integrity", first_seen=T0, ts=T0, last_seen=T0, step=100, ranks=[6],
        nodes=["node-00"], observed="94ebc174", expected="e4c24a2f", score=1.0,
        summary="rank 6 on node-00: param checksum differs.", evidence={"replicas": 31.0},
        check_version="1",
    )
    lifecycle = AlertLifecycle()
    [fired] = lifecycle.observe_findings([finding])
    store_alerts(store, fired)
    assert open_alerts(store, T0) == [fired]
    [ended] = lifecycle.tick(T0 + 600)
    store_alerts(store, ended)
    assert open_alerts(store, T0) == []
    assert recent_alerts(store, T0, 10) == [ended]


def test_empty_job_node_and_urls_come_back_as_none(store: ChdbStore) -> None:
    bare = alert(job_id=None, node=None, rank=None, gpu_index=None, evidence={}, labels={},
                 runbook_url=None, dashboard_url=None)
    store_alerts(store, bare)
    assert open_alerts(store, T0) == [bare]


def test_open_alerts_take_the_latest_state_of_each_fingerprint(store: ChdbStore) -> None:
    a1 = alert("fp-a")
    b1 = alert("fp-b", start=T0 + 10, severity="ticket")
    # fp-c resolves and fires again at the same instant: the new episode is what is open.
    c1 = alert("fp-c", start=T0 + 20)
    c2 = alert("fp-c", start=T0 + 300)
    store_alerts(store, a1, b1, resolved(b1, T0 + 200), c1, resolved(c1, T0 + 300), c2)
    assert open_alerts(store, T0) == [a1, c2]


def test_replayed_rows_give_one_alert(store: ChdbStore) -> None:
    firing = alert()
    store_alerts(store, firing, firing, firing)
    assert open_alerts(store, T0) == [firing]
    assert recent_alerts(store, T0, 10) == [firing]


def test_since_leaves_out_older_state_changes(store: ChdbStore) -> None:
    old, new = alert("fp-old"), alert("fp-new", start=T0 + 3600)
    store_alerts(store, old, new)
    assert open_alerts(store, T0 + 1) == [new]
    assert recent_alerts(store, T0 + 1, 10) == [new]


def test_recent_alerts_show_each_episode_once_newest_first(store: ChdbStore) -> None:
    a1 = alert("fp-a")
    a2 = alert("fp-a", start=T0 + 1000)
    b1 = alert("fp-b", start=T0 + 500)
    store_alerts(store, a1, resolved(a1, T0 + 120), b1, a2, resolved(a2, T0 + 1200))
    assert recent_alerts(store, T0, 10) == [resolved(a2, T0 + 1200), b1, resolved(a1, T0 + 120)]
    assert recent_alerts(store, T0, 2) == [resolved(a2, T0 + 1200), b1]


@pytest.mark.parametrize("limit", [0, -1])
def test_recent_alerts_refuse_a_limit_below_one(store: ChdbStore, limit: int) -> None:
    with pytest.raises(ConfigError, match=f"limit={limit}"):
        recent_alerts(store, T0, limit)


def test_a_bad_since_is_refused(store: ChdbStore) -> None:
    with pytest.raises(ConfigError, match="since=nan"):
        open_alerts(store, float("nan"))


def test_delivered_keys_are_the_successful_deliveries_since(store: ChdbStore) -> None:
    now = time.time()  # recent: alert_deliveries drop rows 90 days after ts

    def delivery(receiver: str, alert_id: str, status: str, outcome: str, ts: float,
                 attempts: int = 1) -> dict[str, Any]:
        return {"receiver": receiver, "alert_id": alert_id, "fingerprint": "fp",
                "status": status, "severity": "page", "outcome": outcome,
                "attempts": attempts, "detail": "" if outcome == "delivered" else "HTTP 503",
                "ts": ts, "alert_ts": ts - 5}

    store.insert_rows("alert_deliveries", [
        delivery("pagerduty", "a-1", "firing", "failed", now - 60),
        delivery("pagerduty", "a-1", "firing", "delivered", now - 50, attempts=2),
        delivery("pagerduty", "a-1", "firing", "delivered", now - 40),  # a replay
        delivery("alertmanager", "a-1", "firing", "delivered", now - 50),
        delivery("alertmanager", "a-1", "resolved", "failed", now - 10),
        delivery("alertmanager", "a-0", "firing", "delivered", now - 7200),
    ])
    assert delivered_keys(store, now - 3600) == [
        ("alertmanager", "a-1", "firing"),
        ("pagerduty", "a-1", "firing"),
    ]
    assert ("alertmanager", "a-0", "firing") in delivered_keys(store, now - 86400)
