"""Baseline anomalies become ticket alerts, never pages, through the alert lifecycle."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pipeline.alerts.test_lifecycle import T0, finding
from tests.pipeline.alerts.test_stream import Store
from tests.pipeline.fakes import Clock, FakeTopic, events, run
from trainguard.errors import ConfigError
from trainguard.pipeline.alerts import AlertLifecycle, AlertLifecycleConfig, Silence
from trainguard.pipeline.alerts.alert_job import AlertJob, key_partition
from trainguard.pipeline.alerts.anomalies import ANOMALY_CHECK, from_anomaly
from trainguard.pipeline.publish import Publisher
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Alert, Anomaly


def anomaly(t: float = T0, **kw: Any) -> Anomaly:
    base: dict[str, Any] = dict(
        cluster="c", entity_kind="gpu", entity="node-01/3", node="node-01", gpu_index=3,
        job_id="job-1", metric="power_w", pattern="level_shift", first_seen=t - 4, ts=t,
        value=240.0, baseline=300.0, scale=5.0, score=-12.0, window=60,
        detector="robust-cusum", detector_version="2",
    )
    base.update(kw)
    return Anomaly(**base)


def test_a_level_shift_fires_one_ticket_naming_the_gpu_and_metric() -> None:
    [alert] = AlertLifecycle().observe_anomalies([anomaly()])
    assert (alert.status, alert.severity, alert.check) == ("firing", "ticket", ANOMALY_CHECK)
    assert (alert.node, alert.gpu_index, alert.job_id) == ("node-01", 3, "job-1")
    assert alert.labels["metric"] == "power_w" and alert.labels["pattern"] == "level_shift"
    assert alert.evidence["entity"] == "node-01/3" and alert.evidence["score"] == -12.0
    assert "power_w level shift to 240" in alert.summary


def test_a_spike_raises_no_alert_by_default() -> None:
    assert AlertLifecycle().observe_anomalies([anomaly(pattern="spike")]) == []


def test_anomaly_patterns_choose_which_patterns_alert() -> None:
    lc = AlertLifecycle(AlertLifecycleConfig(anomaly_patterns=("spike",)))
    assert [a.severity for a in lc.observe_anomalies([anomaly(pattern="spike")])] == ["ticket"]
    assert lc.observe_anomalies([anomaly(pattern="drift", entity="node-01/4")]) == []


def test_an_unknown_anomaly_pattern_is_rejected_naming_it() -> None:
    with pytest.raises(ConfigError, match="'dip'"):
        AlertLifecycleConfig(anomaly_patterns=("dip",))


def test_the_ticket_stays_open_an_hour_and_a_repeat_meanwhile_only_refreshes_it() -> None:
    lc = AlertLifecycle()
    [fired] = lc.observe_anomalies([anomaly()])
    assert lc.observe_anomalies([anomaly(t=T0 + 600, pattern="drift")]) == []
    assert lc.tick(T0 + 3000) == []  # past resolve_after_s, within anomaly_resolve_after_s
    [resolved] = lc.tick(T0 + 600 + 3600)
    assert resolved.alert_id == fired.alert_id and resolved.status == "resolved"
    assert resolved.ends_at == T0 + 600 + 3600


def test_an_anomaly_never_pages_even_among_many_pages_and_is_not_rate_limited() -> None:
    lc = AlertLifecycle()
    lc.observe_findings([finding(finding_id=f"f{i}", ranks=[i], nodes=[f"node-0{i}"])
                         for i in range(6)])
    [alert] = lc.observe_anomalies([anomaly()])
    assert alert.severity == "ticket" and "rate_limited" not in alert.labels
    assert from_anomaly(anomaly()).pages_alone is False


def test_a_silence_of_the_node_turns_the_ticket_into_info() -> None:
    lc = AlertLifecycle()
    lc.set_silences([Silence("s1", None, "node-01", T0 - 10, T0 + 10, "swap", "ops")])
    [alert] = lc.observe_anomalies([anomaly()])
    assert alert.severity == "info" and alert.labels["silenced"] == "s1"


def _anomaly_job(store: Store, alerts: FakeTopic) -> AlertJob:
    pub = Publisher("w", dead_letters=FakeTopic(), alerts=alerts)
    return AlertJob(AlertLifecycleConfig(), pub, store.write, findings_topic="findings",
                    partitions=3, read_open=store.read_open, read_silences=store.read_silences,
                    clock=Clock(T0), anomalies_topic="anomalies")


def test_the_alert_job_turns_anomalies_into_tickets_in_topic_and_table() -> None:
    async def main() -> None:
        store, alerts = Store(), FakeTopic()
        job = _anomaly_job(store, alerts)
        values = [encode(anomaly()), encode(anomaly(pattern="spike", entity="node-01/1"))]
        await job.handle_anomalies(events("anomalies", [0, 1], partition=2, values=values))
        [sent] = [RecordDecoder(Alert).decode(s.value) for s in alerts.sent]
        assert (sent.severity, sent.check, sent.status) == ("ticket", ANOMALY_CHECK, "firing")
        [rows] = store.writes
        assert [r["severity"] for r in rows["alerts"]] == ["ticket"] and job.firing() == 1

    run(main())


def test_an_undecodable_anomaly_is_a_dead_letter_not_a_crash() -> None:
    async def main() -> None:
        store, alerts = Store(), FakeTopic()
        job = _anomaly_job(store, alerts)
        await job.handle_anomalies(events("anomalies", [0], values=[b"not json"]))
        assert alerts.sent == [] and any(w.get("dead_letters") for w in store.writes)

    run(main())


def test_a_new_owner_restores_open_anomaly_tickets_of_its_anomalies_partition() -> None:
    async def main() -> None:
        [fired] = AlertLifecycle().observe_anomalies([anomaly()])
        part = key_partition(b"node-01/3", 3)
        store = Store(open_alerts=[fired])
        job = _anomaly_job(store, FakeTopic())

        class TP:
            def __init__(self, topic: str, partition: int) -> None:
                self.topic, self.partition = topic, partition

        await job.on_assigned([TP("findings", p) for p in range(3)]
                              + [TP("anomalies", part)])
        assert len(job.anomaly_lifecycles[part].open_alerts()) == 1
        assert sum(len(lc.open_alerts()) for lc in job.lifecycles.values()) == 0
        # The same anomaly again is the same ticket: nobody is notified twice.
        again = job.anomaly_lifecycles[part].observe_anomalies([anomaly(t=T0 + 5)])
        assert again == []

    run(main())

