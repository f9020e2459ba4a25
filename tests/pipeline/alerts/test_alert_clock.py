"""Alert time is per job: no record of another job can resolve an alert."""

from __future__ import annotations

from tests.pipeline.alerts.test_lifecycle import T0, finding
from tests.pipeline.alerts.test_stream import Store, _job
from tests.pipeline.fakes import Clock, FakeTopic, events, run
from trainguard.pipeline.alerts import AlertLifecycle
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Alert


def _sent(topic: FakeTopic) -> list[tuple[str | None, str]]:
    decoded = [RecordDecoder(Alert).decode(s.value) for s in topic.sent]
    return [(a.job_id, a.status) for a in decoded]


def test_another_jobs_future_finding_does_not_resolve_an_open_alert() -> None:
    async def main() -> None:
        wall, alerts = Clock(T0), FakeTopic()
        job = _job(Store(), alerts, FakeTopic(), wall)
        await job.handle(events("findings", [0], values=[encode(finding())]))
        far = finding(T0 + 86400, finding_id="f-2", job_id="job-2", ranks=[1])
        await job.handle(events("findings", [1], values=[encode(far)]))
        await job.tick()
        assert _sent(alerts) == [("job-1", "firing"), ("job-2", "firing")]
        assert job.firing() == 2

    run(main())


def test_a_quiet_jobs_alert_expires_in_wall_clock_time() -> None:
    async def main() -> None:
        wall, alerts = Clock(T0), FakeTopic()
        job = _job(Store(), alerts, FakeTopic(), wall)
        await job.handle(events("findings", [0], values=[encode(finding())]))
        wall.advance(119)
        await job.tick()
        assert job.firing() == 1
        wall.advance(1)  # resolve_after_s (120) of silence, by the wall clock
        await job.tick()
        assert _sent(alerts) == [("job-1", "firing"), ("job-1", "resolved")]

    run(main())


def test_the_jobs_own_event_time_resolves_its_alerts_at_replay_speed() -> None:
    async def main() -> None:
        wall, alerts = Clock(T0), FakeTopic()
        job = _job(Store(), alerts, FakeTopic(), wall)
        job._event_now = lambda j: T0 + 500 if j == "job-1" else -float("inf")
        await job.handle(events("findings", [0], values=[encode(finding())]))
        await job.tick()
        assert _sent(alerts) == [("job-1", "firing"), ("job-1", "resolved")]

    run(main())


def test_lifecycle_tick_takes_each_jobs_own_time() -> None:
    lc = AlertLifecycle()
    lc.observe_findings([finding(), finding(finding_id="f-2", job_id="job-2", ranks=[1])])
    resolved = lc.tick(lambda j: T0 + 1000 if j == "job-2" else T0)
    assert [(a.job_id, a.status) for a in resolved] == [("job-2", "resolved")]
