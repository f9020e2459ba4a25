"""Publisher: every record is acknowledged by Kafka before the call returns, rows are added."""

from __future__ import annotations

import asyncio

import pytest

from tests.pipeline.alerts.test_lifecycle import finding
from tests.pipeline.fakes import FakeTopic, anomaly, run, spin
from trainguard.pipeline.alerts import AlertLifecycle
from trainguard.pipeline.dead_letters import DEAD_LETTER_HEADERS, DeadLetter, RawMessage
from trainguard.pipeline.publish import Publisher
from trainguard.pipeline.sinks.rows import Row
from trainguard.schemas.codec import RecordDecoder
from trainguard.schemas.records import Anomaly, Finding


def _publisher(**topics: FakeTopic) -> Publisher:
    return Publisher("host:1", dead_letters=topics.get("dead_letters", FakeTopic()),
                     anomalies=topics.get("anomalies"), findings=topics.get("findings"),
                     alerts=topics.get("alerts"), clock=lambda: 42.0)


def test_dead_letters_wait_for_kafka_acks_before_returning() -> None:
    async def main() -> None:
        topic = FakeTopic(auto_ack=False)
        rows: dict[str, list[Row]] = {}
        dead = [DeadLetter(RawMessage("in", 1, o, b"k", b"bad", None), "not_json", "boom")
                for o in (5, 6)]
        task = asyncio.create_task(_publisher(dead_letters=topic).dead_letters(dead, rows))
        await spin()
        assert len(topic.sent) == 2 and not task.done()  # both queued, neither acked yet
        topic.ack_all()
        await task
        assert [s.value for s in topic.sent] == [b"bad", b"bad"]
        assert topic.header_names == [list(DEAD_LETTER_HEADERS)] * 2
        assert dict(topic.sent[0].headers)["tg.worker"] == b"host:1"
        assert [r["offset"] for r in rows["dead_letters"]] == [5, 6]
        assert rows["dead_letters"][0]["ts"] == 42.0  # no message time: the clock's

    run(main())


def test_anomalies_are_keyed_by_entity_and_add_their_rows() -> None:
    async def main() -> None:
        topic = FakeTopic()
        rows: dict[str, list[Row]] = {"anomalies": [{"earlier": 1}]}
        await _publisher(anomalies=topic).anomalies([anomaly(), anomaly(entity="n/1")], rows)
        assert [s.key for s in topic.sent] == [b"node-03/2", b"n/1"]
        assert RecordDecoder(Anomaly).decode(topic.sent[0].value).entity == "node-03/2"
        assert len(rows["anomalies"]) == 3  # appended to what the batch had

    run(main())


def test_findings_are_keyed_by_job_or_cluster() -> None:
    async def main() -> None:
        topic = FakeTopic()
        rows: dict[str, list[Row]] = {}
        await _publisher(findings=topic).findings([finding(), finding(job_id=None)], rows)
        assert [s.key for s in topic.sent] == [b"job-1", b"c1"]
        assert RecordDecoder(Finding).decode(topic.sent[0].value).finding_id == "f-1"
        assert len(rows["findings"]) == 2

    run(main())


def test_alerts_go_to_their_topic_and_rows() -> None:
    async def main() -> None:
        topic = FakeTopic()
        rows: dict[str, list[Row]] = {}
        changes = AlertLifecycle().observe_findings([finding()])
        await _publisher().with_alerts(topic).alerts(changes, rows)
        assert [s.key for s in topic.sent] == [b"job-1"] and len(rows["alerts"]) == 1

    run(main())


def test_nothing_to_publish_sends_nothing_and_adds_no_rows() -> None:
    async def main() -> None:
        topic = FakeTopic()
        rows: dict[str, list[Row]] = {}
        pub = _publisher(dead_letters=topic, anomalies=topic, findings=topic)
        await pub.dead_letters([], rows)
        await pub.anomalies([], rows)
        await pub.findings([], rows)
        assert topic.sent == [] and rows == {}

    run(main())


def test_publishing_to_a_topic_not_given_names_it() -> None:
    with pytest.raises(RuntimeError, match="no findings topic"):
        run(_publisher().findings([finding()], {}))


def test_counts_dead_letters_by_reason_and_findings_by_check_shared_with_alerts() -> None:
    async def main() -> None:
        publisher = _publisher(findings=FakeTopic())
        dead = [DeadLetter(RawMessage("in", 1, o, b"k", b"bad", None), reason, "boom")
                for o, reason in ((1, "not_json"), (2, "not_json"), (3, "clock"))]
        await publisher.dead_letters(dead, {})
        raised = finding(check="agent_silent")
        cleared = finding(finding_id="f-2", check="agent_silent", cleared_at=raised.ts + 5)
        await publisher.findings([raised, finding(), cleared], {})
        with_alerts = publisher.with_alerts(FakeTopic())
        await with_alerts.dead_letters(
            [DeadLetter(RawMessage("tg.alerts.v1", 0, 9, b"k", b"a", None), "delivery_failed",
                        "receiver=pd: 500")], {})
        assert with_alerts.counts is publisher.counts
        counts = publisher.counts
        assert counts.dead_letters == {"not_json": 2, "clock": 1, "delivery_failed": 1}
        assert counts.findings == {"agent_silent": 1, "param_divergence": 1}
        assert counts.findings_cleared == {"agent_silent": 1}

    run(main())
