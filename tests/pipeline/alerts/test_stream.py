"""AlertJob and DeliveryJob: the alert stream's work without a broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from tests.pipeline.alerts.test_lifecycle import T0, finding
from tests.pipeline.fakes import Clock, FakeTopic, events, faust_acks, run, spin
from trainguard.pipeline.alerts import AlertLifecycle, AlertLifecycleConfig, Silence
from trainguard.pipeline.alerts.alert_job import AlertJob, key_partition
from trainguard.pipeline.alerts.delivery_job import DeliveryJob
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.publish import Publisher
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Alert


class _TP(NamedTuple):
    topic: str
    partition: int


class Store:
    """What the jobs read from and write to the store, in memory."""

    def __init__(self, open_alerts: Sequence[Alert] = (), fail_silences: bool = False) -> None:
        self.open, self.fail_silences = list(open_alerts), fail_silences
        self.silences: list[Silence] = []
        self.writes: list[dict[str, list[Any]]] = []
        self.delivered: list[tuple[str, str, str]] = []

    async def write(self, rows: dict[str, list[Any]]) -> None:
        self.writes.append(rows)

    async def read_open(self, since: float) -> list[Alert]:
        return self.open

    async def read_silences(self, now: float) -> list[Silence]:
        if self.fail_silences:
            raise RuntimeError("store down")
        return self.silences

    async def read_delivered(self, since: float) -> list[tuple[str, str, str]]:
        return self.delivered


def _job(store: Store, alerts: FakeTopic, dead: FakeTopic, clock: Clock,
         partitions: int = 3) -> AlertJob:
    pub = Publisher("w", dead_letters=dead, alerts=alerts)
    return AlertJob(AlertLifecycleConfig(), pub, store.write, findings_topic="findings",
                    partitions=partitions, read_open=store.read_open,
                    read_silences=store.read_silences, clock=clock)


def test_findings_fire_alerts_published_to_topic_then_table_before_the_batch_returns() -> None:
    async def main() -> None:
        store, alerts, dead = Store(), FakeTopic(auto_ack=False), FakeTopic()
        job = _job(store, alerts, dead, Clock(T0))
        batch = events("findings", [7], values=[encode(finding())])
        task = asyncio.create_task(job.handle(batch))
        await spin()
        assert len(alerts.sent) == 1 and store.writes == [] and not task.done()
        alerts.ack_all()
        await task
        [rows] = store.writes
        assert rows["alerts"][0]["status"] == "firing" and job.firing() == 1

    run(main())


def test_an_undecodable_finding_is_a_dead_letter_with_its_source_coordinates() -> None:
    async def main() -> None:
        store, dead = Store(), FakeTopic()
        job = _job(store, FakeTopic(), dead, Clock(T0))
        await job.handle(events("findings", [11], partition=2, values=[b"garbage"]))
        [sent] = dead.sent
        headers = dict(sent.headers)
        assert sent.value == b"garbage" and headers["tg.source.partition"] == b"2"
        assert headers["tg.source.offset"] == b"11" and headers["tg.error.reason"]
        assert store.writes[0]["dead_letters"][0]["offset"] == 11

    run(main())


def test_tick_resolves_on_event_time_when_it_runs_ahead_of_the_wall_clock() -> None:
    async def main() -> None:
        store, alerts = Store(), FakeTopic()
        pub = Publisher("w", dead_letters=FakeTopic(), alerts=alerts)
        job = AlertJob(AlertLifecycleConfig(), pub, store.write, findings_topic="findings",
                       partitions=3,
                       read_open=store.read_open, read_silences=store.read_silences,
                       event_now=lambda _job: T0 + 1000, clock=Clock(T0))
        await job.handle(events("findings", [0], values=[encode(finding())]))
        await job.tick()
        statuses = [RecordDecoder(Alert).decode(s.value).status for s in alerts.sent]
        assert statuses == ["firing", "resolved"] and job.firing() == 0

    run(main())


def test_reassignment_drops_stale_lifecycles_and_restores_only_the_new_partitions_alerts() -> None:
    async def main() -> None:
        parts = 4
        fired = [a for job_id in ("job-1", "job-2", "job-3", "job-4")
                 for a in AlertLifecycle().observe_findings([finding(job_id=job_id)])]
        mine = {key_partition(a.job_id.encode(), parts) for a in fired if a.job_id}
        keep, new = sorted(mine)[0], sorted(mine)[-1]
        job = _job(Store(open_alerts=fired), FakeTopic(), FakeTopic(), Clock(T0), parts)
        job.lifecycle(keep)
        stale = next(p for p in range(parts) if p not in (keep, new))
        job.lifecycle(stale)
        await job.on_assigned({_TP("findings", keep), _TP("findings", new), _TP("other", 9)})
        assert set(job.lifecycles) == {keep, new}
        expected = sum(1 for a in fired if a.job_id and key_partition(a.job_id.encode(),
                                                                      parts) == new)
        assert keep != new and expected > 0
        assert len(job.lifecycles[new].open_alerts()) == expected
        assert job.lifecycles[keep].open_alerts() == []  # kept as it was, not re-read

    run(main())


def test_silences_refresh_reaches_every_lifecycle_and_a_store_error_keeps_the_old_set() -> None:
    async def main() -> None:
        store = Store()
        job = _job(store, FakeTopic(), FakeTopic(), Clock(T0))
        store.silences = [Silence("s-1", "job-1", None, T0 - 60, T0 + 3600, "work", "sre")]
        await job.refresh_silences()
        store.fail_silences = True
        await job.refresh_silences()  # logged, not raised
        [alert] = job.lifecycle(0).observe_findings([finding(check="node_idle",
                                                              category="hardware")])
        assert alert.labels["silenced"] == "s-1"

    run(main())


class FakeDispatcher:
    """Takes alerts; the test decides when each submit is done and which receiver fails."""

    def __init__(self, ledger: Any, on_failed: Any) -> None:
        self.ledger, self.on_failed = ledger, on_failed
        self.submitted: list[tuple[list[Alert], asyncio.Future[None]]] = []
        self.started = self.stopped = False
        self.kept: list[Alert] = []

    async def start(self) -> None:
        self.started = True

    async def stop(self, drain_s: float = 10.0) -> None:
        self.stopped = True

    def keep_alive(self, alerts: Sequence[Alert]) -> int:
        self.kept += alerts
        return len(alerts)

    async def submit(self, alerts: Sequence[Alert]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submitted.append((list(alerts), future))
        return future

    def stats(self) -> dict[str, dict[str, int]]:
        return {"rx": {"sent": 1, "retries": 0, "failed": 2, "queued": 3, "resent": 0,
                       "skipped": 0}}


def _delivery(store: Store, dead: FakeTopic, out: list[int]) -> DeliveryJob:
    return DeliveryJob((), Publisher("w", dead_letters=dead), store.write,
                       HeldOffsets(lambda e: out.append(e.message.offset)),
                       alerts_topic="alerts", read_delivered=store.read_delivered,
                       read_open=store.read_open, clock=Clock(T0), dispatcher=FakeDispatcher)


def _alert_events(offsets: list[int]) -> tuple[list[Alert], list[Any]]:
    fired = AlertLifecycle().observe_findings([finding()])
    return fired, events("alerts", offsets, partition=1, values=[encode(fired[0])] * len(offsets))


def test_alert_offsets_are_acked_once_every_receiver_settled_and_not_when_cancelled() -> None:
    async def main() -> None:
        store, out = Store(), []
        job = _delivery(store, FakeTopic(), out)
        await job.start()
        dispatcher = job.dispatcher
        assert isinstance(dispatcher, FakeDispatcher) and dispatcher.started
        _, first = _alert_events([5])
        await job.handle(first)
        faust_acks(first)
        _, second = _alert_events([6])
        await job.handle(second)
        faust_acks(second)
        await spin()
        assert out == []
        dispatcher.submitted[0][1].set_result(None)
        dispatcher.submitted[1][1].cancel()  # stopped before delivery: replayed, not acked
        await spin()
        assert out == [5]
        await job.stop()
        assert dispatcher.stopped

    run(main())


def test_a_receiver_giving_up_is_a_dead_letter_naming_the_alerts_offset() -> None:
    async def main() -> None:
        store, dead = Store(), FakeTopic()
        job = _delivery(store, dead, [])
        await job.start()
        fired, batch = _alert_events([9])
        await job.handle(batch)
        dispatcher = job.dispatcher
        assert isinstance(dispatcher, FakeDispatcher)
        [submitted], _ = dispatcher.submitted[0]
        dispatcher.on_failed(submitted, "pager", "HTTP 500")
        await job.flush()
        [sent] = dead.sent
        headers = dict(sent.headers)
        assert headers["tg.error.reason"] == b"delivery_failed"
        assert headers["tg.source.partition"] == b"1" and headers["tg.source.offset"] == b"9"
        assert sent.value == encode(fired[0])
        [rows] = store.writes
        assert rows["dead_letters"][0]["message"] == "receiver=pager: HTTP 500"
        await job.flush()
        assert len(dead.sent) == 1 and len(store.writes) == 1  # nothing new: no write

    run(main())


def test_delivery_start_preloads_the_ledger_and_keeps_firing_alerts_alive() -> None:
    async def main() -> None:
        fired, _ = _alert_events([0])
        store = Store(open_alerts=fired)
        job = _delivery(store, FakeTopic(), [])
        await job.start()
        await asyncio.wait_for(job.wait_started(), 1)
        dispatcher = job.dispatcher
        assert isinstance(dispatcher, FakeDispatcher) and dispatcher.kept == fired
        assert job.health() == {"alerts_queued": 3.0, "deliveries_failed_total": 2.0}

    run(main())


def test_an_undecodable_alert_is_a_dead_letter_and_not_submitted() -> None:
    async def main() -> None:
        store, dead = Store(), FakeTopic()
        job = _delivery(store, dead, [])
        await job.start()
        await job.handle(events("alerts", [3], values=[b"{"]))
        dispatcher = job.dispatcher
        assert isinstance(dispatcher, FakeDispatcher) and dispatcher.submitted == []
        assert dict(dead.sent[0].headers)["tg.source.topic"] == b"alerts"

    run(main())
