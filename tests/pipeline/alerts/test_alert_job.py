"""AlertJob quarantine: a finding the lifecycle raises on is a dead letter, the rest page."""

from __future__ import annotations

from typing import Any

from tests.pipeline.alerts.test_lifecycle import T0, finding
from tests.pipeline.alerts.test_stream import Store, _job
from tests.pipeline.fakes import Clock, FakeTopic, events, run
from trainguard.pipeline.alerts import AlertLifecycle
from trainguard.schemas.codec import encode
from trainguard.schemas.records import Alert, Finding


class _Buggy(AlertLifecycle):
    """A lifecycle with a bug on one finding id."""

    def observe_findings(self, findings: Any) -> list[Alert]:
        if any(f.finding_id == "f-bug" for f in findings):
            raise IndexError("lifecycle bug")
        return super().observe_findings(findings)

    def tick(self, now: float) -> list[Alert]:
        raise IndexError("tick bug")


def _findings() -> list[Finding]:
    return [finding(finding_id="f-1", ranks=[1], nodes=["node-01"]),
            finding(finding_id="f-bug", ranks=[2], nodes=["node-02"]),
            finding(finding_id="f-3", check="lr_mismatch", ranks=[3], nodes=["node-03"])]


def test_a_finding_the_lifecycle_raises_on_is_a_dead_letter_and_the_others_still_fire() -> None:
    async def main() -> None:
        store, alerts, dead = Store(), FakeTopic(), FakeTopic()
        job = _job(store, alerts, dead, Clock(T0))
        job.lifecycles[0] = _Buggy(job.lifecycle(1).config)
        values = [encode(f) for f in _findings()]
        await job.handle(events("findings", [4, 5, 6], partition=0, values=values))
        [sent] = dead.sent
        headers = dict(sent.headers)
        assert sent.value == values[1] and headers["tg.error.reason"] == b"stage_error"
        assert headers["tg.error.message"] == b"stage alerts raised IndexError: lifecycle bug"
        assert headers["tg.source.offset"] == b"5"
        fired = [a for rows in store.writes for a in rows.get("alerts", [])]
        assert sorted(a["check"] for a in fired) == ["lr_mismatch", "param_divergence"]
        assert any(rows.get("dead_letters") for rows in store.writes)
        assert job.quarantine.errors == {"alerts": 1}

    run(main())


def test_a_lifecycle_whose_tick_raises_does_not_stop_the_other_partitions_resolving() -> None:
    async def main() -> None:
        store, alerts = Store(), FakeTopic()
        clock = Clock(T0)
        job = _job(store, alerts, FakeTopic(), clock)
        await job.handle(events("findings", [1], partition=1, values=[encode(finding())]))
        job.lifecycles[0] = _Buggy(job.lifecycle(1).config)
        clock.advance(24 * 3600)
        await job.tick()
        assert [a.status for a in _alerts(alerts)] == ["firing", "resolved"]
        assert job.quarantine.errors == {"alerts_tick": 1}

    run(main())


def _alerts(topic: FakeTopic) -> list[Alert]:
    from trainguard.schemas.codec import RecordDecoder

    return [RecordDecoder(Alert).decode(s.value) for s in topic.sent]
