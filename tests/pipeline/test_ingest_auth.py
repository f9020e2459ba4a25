"""Ingest with authentication: unsigned or foreign-node messages are refused and reported once."""

from __future__ import annotations

import msgspec

from tests.pipeline.fakes import FakeEvent, FakeMessage, faust_acks, raw, run
from tests.pipeline.test_batches import Topics as PublishTopics
from tests.pipeline.test_batches import Writes, _handler
from tests.pipeline.test_ingest import NOW, TOPICS, _batch
from trainguard.pipeline.auth import ForgeryTracker, MessageAuth, foreign_node
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.schemas.auth import FleetSecret, derive_node_key, sign
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Finding, Heartbeat, StepBatch, StepRecord

FLEET = FleetSecret(b"f" * 32)
OLD = FleetSecret(b"p" * 32)


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def _ingestor(*, required: bool = True, secrets=(FLEET,), repeat_s: float = 300.0,
              clock: Clock | None = None) -> Ingestor:
    auth = MessageAuth(list(secrets), required=required,
                       tracker=ForgeryTracker(repeat_s=repeat_s, max_claims=3))
    return Ingestor(TOPICS, auth=auth, clock=clock or Clock())


def _signed(topic: str, value: bytes, signer: str | None, *, fleet: FleetSecret = FLEET,
            offset: int = 0, key: bytes = b"k") -> RawMessage:
    headers = () if signer is None else tuple(sign(derive_node_key(fleet, signer), topic, key,
                                                   value))
    return RawMessage(topic, 0, offset, key, value, NOW, headers)


def _steps(batch_node: str, step_nodes: list[str]) -> bytes:
    steps = [StepRecord(job_id="j", rank=r, world_size=len(step_nodes), node=n, step=1, ts=NOW,
                        loss=1.0) for r, n in enumerate(step_nodes)]
    return encode(StepBatch(cluster="c", node=batch_node, job_id="j", ts=NOW, seq=1,
                            agent_id="a", steps=steps))


def test_a_message_signed_by_the_node_it_names_is_ingested() -> None:
    ingestor = _ingestor()
    result = ingestor.ingest([_signed(TOPICS.samples, encode(_batch("n1")), "n1")])
    assert result.records == 1 and not result.dead and not result.findings
    assert ingestor.auth is not None and ingestor.auth.verified == 1


def test_an_unsigned_message_is_unauthenticated_and_names_the_node_it_claims() -> None:
    result = _ingestor().ingest([_signed(TOPICS.samples, encode(_batch("n1")), None)])
    [dead] = result.dead
    assert dead.reason == "unauthenticated" and "no_mac" in dead.message
    assert result.records == 0 and not result.lines
    [found] = result.findings
    assert (found.check, found.category, found.nodes) == ("forged_telemetry", "integrity", ["n1"])
    assert (found.expected, found.observed) == ("n1", "unauthenticated")
    assert found.evidence["reason"] == "no_mac" and found.cluster == "c"


def test_node_a_signing_node_bs_records_is_refused_naming_both() -> None:
    ingestor = _ingestor()
    result = ingestor.ingest([_signed(TOPICS.samples, encode(_batch("node-b")), "node-a")])
    [dead] = result.dead
    assert dead.reason == "unauthenticated" and "wrong_node" in dead.message
    [found] = result.findings
    assert (found.expected, found.observed) == ("node-b", "node-a")
    assert found.nodes == ["node-a", "node-b"] and "signed by node node-a" in found.summary
    assert ingestor.auth is not None and ingestor.auth.failed == {"wrong_node": 1}


def test_a_step_record_naming_another_node_inside_an_own_batch_is_refused() -> None:
    result = _ingestor().ingest([_signed(TOPICS.steps, _steps("node-a", ["node-a", "node-b"]),
                                         "node-a")])
    assert [d.reason for d in result.dead] == ["unauthenticated"]
    assert result.findings[0].expected == "node-b" and result.records == 0


def test_heartbeats_are_checked_too() -> None:
    beat = Heartbeat(cluster="c", node="node-b", ts=NOW, seq=1, agent_id="a", agent_version="1",
                     backend="simulated", uptime_s=1.0, gpu_count=8)
    result = _ingestor().ingest([_signed(TOPICS.heartbeats, encode(beat), "node-a")])
    assert [d.reason for d in result.dead] == ["unauthenticated"]


def test_a_message_signed_for_another_topic_is_unauthenticated() -> None:
    value = encode(_batch("n1"))
    moved = _signed(TOPICS.steps, value, "n1")
    msg = RawMessage(TOPICS.samples, 0, 0, b"k", value, NOW, moved.headers)
    result = _ingestor().ingest([msg])
    assert "bad_mac" in result.dead[0].message
    assert result.findings[0].observed == "unauthenticated"


def test_a_key_of_the_previous_secret_is_accepted_during_a_rotation() -> None:
    msg = _signed(TOPICS.samples, encode(_batch("n1")), "n1", fleet=OLD)
    assert _ingestor(secrets=(FLEET, OLD)).ingest([msg]).records == 1
    result = _ingestor(secrets=(FLEET,)).ingest([msg])
    assert "unknown_kid" in result.dead[0].message


def test_a_flood_of_forgeries_makes_one_finding_then_a_repeat_with_the_count() -> None:
    clock = Clock()
    ingestor = _ingestor(repeat_s=60, clock=clock)
    flood = [_signed(TOPICS.samples, encode(_batch("node-b")), "node-a", offset=i)
             for i in range(1000)]
    first = ingestor.ingest(flood)
    assert len(first.dead) == 1000 and len(first.findings) == 1
    assert ingestor.ingest(flood[:10]).findings == []  # within repeat_s: folded
    clock.t += 61
    [again] = ingestor.ingest(flood[:1]).findings
    assert again.finding_id == first.findings[0].finding_id and again.score == 1011.0
    assert ingestor.auth is not None and ingestor.auth.tracker.folded == 1009


def test_one_source_claiming_many_nodes_is_folded_under_one_claim() -> None:
    ingestor = _ingestor()  # max_claims=3
    msgs = [_signed(TOPICS.samples, encode(_batch(f"victim-{i}")), "node-a", offset=i)
            for i in range(10)]
    found = ingestor.ingest(msgs).findings
    assert [f.expected for f in found] == ["victim-0", "victim-1", "victim-2", "*"]
    assert found[-1].nodes == ["node-a"] and "several nodes" in found[-1].summary


def test_garbage_without_a_mac_is_unauthenticated_with_an_unknown_claim() -> None:
    result = _ingestor().ingest([_signed(TOPICS.samples, b"[" * 50_000, None)])
    assert result.dead[0].reason == "unauthenticated"
    assert result.findings[0].expected == "unknown" and result.findings[0].cluster == "unknown"


def test_a_signed_message_that_does_not_decode_keeps_its_decode_reason() -> None:
    result = _ingestor().ingest([_signed(TOPICS.samples, b"not json", "n1")])
    assert result.dead[0].reason == "not_json" and not result.findings


def test_without_required_auth_failures_are_only_counted() -> None:
    ingestor = _ingestor(required=False)
    result = ingestor.ingest([_signed(TOPICS.samples, encode(_batch("n1")), None),
                              _signed(TOPICS.samples, encode(_batch("b")), "a", offset=1)])
    assert result.records == 2 and not result.dead and not result.findings
    assert ingestor.auth is not None
    assert ingestor.auth.health()["auth_failed_no_mac"] == 1.0
    assert ingestor.auth.health()["auth_failed_wrong_node"] == 1.0


def test_foreign_node_finds_the_first_other_node_a_record_speaks_for() -> None:
    batch = RecordDecoder(StepBatch).decode(_steps("a", ["a", "b", "c"]))
    assert foreign_node(batch, "a") == "b" and foreign_node(batch, "b") == "a"
    assert foreign_node(msgspec.structs.replace(batch, steps=batch.steps[:1]), "a") is None


def test_the_batch_handler_publishes_the_forgery_finding_and_the_dead_letter() -> None:
    async def main() -> None:
        topics, writes = PublishTopics(), Writes()
        handler, _ = _handler(topics, writes, ingestor=_ingestor())
        msg = _signed(TOPICS.samples, encode(_batch("node-b")), "node-a")
        batch = [FakeEvent(FakeMessage(msg.topic, 0, 0, msg.key, msg.value, NOW,
                                       headers=list(msg.headers)))]
        await handler.handle(raw(batch), batch)
        faust_acks(batch)
        assert len(topics.dead.sent) == 1 and len(topics.findings.sent) == 1
        found = msgspec.json.decode(topics.findings.sent[0].value, type=Finding)
        assert found.check == "forged_telemetry" and found.observed == "node-a"
        [(rows, _)] = writes.calls
        assert [r["check"] for r in rows["findings"]] == ["forged_telemetry"]

    run(main())


def test_raw_message_of_keeps_faust_headers_in_order() -> None:
    fake = FakeMessage("t", 0, 1, headers=[("a", b"1"), ("b", b"2")])
    assert RawMessage.of(fake).headers == (("a", b"1"), ("b", b"2"))
    assert RawMessage.of(FakeMessage("t", 0, 1)).headers == ()
