"""The deployment's ACLs: agents write telemetry only; workers alone write verdicts."""

from __future__ import annotations

from trainguard.pipeline.kafka_acls import (
    AclRule,
    kafka_acls_commands,
    pipeline_acls,
    verdict_topics,
)
from trainguard.schemas.topics import Topics

TOPICS = Topics("p1")


def _rules() -> list[AclRule]:
    return pipeline_acls(TOPICS, agents=["agent", "User:agent-n2"], workers=["worker"],
                         app_id="tg-worker")


def _grants(principal: str, operation: str) -> set[str]:
    return {r.name for r in _rules() if r.principal == principal and r.operation == operation
            and r.resource == "topic"}


def test_agents_may_only_write_and_describe_the_input_topics() -> None:
    for principal in ("User:agent", "User:agent-n2"):
        mine = [r for r in _rules() if r.principal == principal]
        assert {(r.resource, r.operation) for r in mine} == {("topic", "WRITE"),
                                                             ("topic", "DESCRIBE")}
        assert {r.name for r in mine} == set(TOPICS.inputs())
        assert not any(r.prefixed for r in mine)


def test_only_workers_write_findings_alerts_anomalies_state_and_dead_letters() -> None:
    writers = {r.principal for r in _rules() if r.operation in ("WRITE", "ALL")
               and r.name in verdict_topics(TOPICS)}
    assert writers == {"User:worker"}
    assert _grants("User:worker", "WRITE") == set(verdict_topics(TOPICS))
    assert {TOPICS.findings, TOPICS.alerts, TOPICS.anomalies, TOPICS.baseline_state,
            TOPICS.dead_letters} == set(verdict_topics(TOPICS))


def test_workers_read_the_inputs_and_own_their_group_and_faust_topics() -> None:
    assert set(TOPICS.inputs()) <= _grants("User:worker", "READ")
    assert not set(TOPICS.inputs()) & _grants("User:worker", "WRITE")
    worker = [r for r in _rules() if r.principal == "User:worker"]
    assert AclRule("User:worker", "group", "tg-worker", "READ") in worker
    assert AclRule("User:worker", "topic", "tg-worker-", "ALL", prefixed=True) in worker
    # Faust's own topics start with the app id, never with the deployment's prefix.
    assert not any(t.startswith("tg-worker-") for t in TOPICS.all())


def test_the_grants_render_as_kafka_acls_commands() -> None:
    lines = kafka_acls_commands(pipeline_acls(TOPICS, agents=["agent"], workers=[],
                                              app_id="x"), bootstrap="k:9093")
    assert len(lines) == 6
    assert lines[0] == ("kafka-acls.sh --bootstrap-server k:9093 --command-config "
                        "admin.properties --add --allow-principal User:agent --operation "
                        f"Write --topic {TOPICS.samples}")
    prefixed = kafka_acls_commands([AclRule("User:w", "topic", "app-", "DESCRIBE_CONFIGS",
                                            prefixed=True)])
    assert prefixed[0].endswith("--operation DescribeConfigs --topic app- "
                                "--resource-pattern-type prefixed")
