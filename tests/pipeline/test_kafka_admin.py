from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer

from trainguard.errors import BrokerError
from trainguard.local.broker import free_port
from trainguard.pipeline.kafka_admin import (
    broker_replication_factor,
    ensure_topics,
    wait_for_broker,
)

pytestmark = pytest.mark.integration


def test_ensure_topics_creates_once_with_requested_partitions(
    bootstrap: str, make_consumer: Callable[..., KafkaConsumer]
) -> None:
    names = [f"admin-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    assert ensure_topics(bootstrap, names, partitions=4) == names
    assert ensure_topics(bootstrap, names, partitions=4) == []
    assert ensure_topics(bootstrap, [*names, names[0]], partitions=4) == []

    consumer = make_consumer()
    for name in names:
        assert consumer.partitions_for_topic(name) == {0, 1, 2, 3}


def test_new_topic_fixture_gives_three_partitions(
    new_topic: Callable[..., str], make_consumer: Callable[..., KafkaConsumer]
) -> None:
    assert make_consumer().partitions_for_topic(new_topic()) == {0, 1, 2}


def test_ensure_topics_rejects_a_bad_name(bootstrap: str) -> None:
    with pytest.raises(BrokerError, match="'bad topic'"):
        ensure_topics(bootstrap, ["bad topic"])


def test_wait_for_broker_succeeds_on_a_live_broker(bootstrap: str) -> None:
    wait_for_broker(bootstrap, timeout=10)


def test_wait_for_broker_on_a_closed_port_fails_fast() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerError, match=f"cannot reach Kafka at '{bootstrap}' within 0.5s"):
        wait_for_broker(bootstrap, timeout=0.5)
    assert time.monotonic() - started < 3


def test_wait_for_broker_rejects_a_malformed_bootstrap() -> None:
    with pytest.raises(BrokerError, match="'localhost'"):
        wait_for_broker("localhost", timeout=0.1)


def test_pipeline_topics_stamp_inputs_with_the_brokers_time(bootstrap: str) -> None:
    from trainguard.pipeline.kafka_admin import ensure_pipeline_topics, timestamp_types
    from trainguard.schemas.topics import Topics

    topics = Topics(f"ts{uuid.uuid4().hex[:8]}")
    created = ensure_pipeline_topics(bootstrap, topics, partitions=2)
    assert sorted(created) == sorted([*topics.all(), topics.baseline_state])
    kinds = timestamp_types(bootstrap, [*topics.inputs(), topics.findings])
    assert kinds == {**dict.fromkeys(topics.inputs(), "LogAppendTime"),
                     topics.findings: "CreateTime"}
    assert ensure_pipeline_topics(bootstrap, topics) == []


def test_a_record_on_an_input_topic_carries_the_brokers_time_not_the_senders(
        bootstrap: str, make_producer: Callable[..., Any],
        make_consumer: Callable[..., KafkaConsumer]) -> None:
    from trainguard.pipeline.kafka_admin import ensure_pipeline_topics
    from trainguard.schemas.topics import Topics

    topics = Topics(f"ts{uuid.uuid4().hex[:8]}")
    ensure_pipeline_topics(bootstrap, topics, partitions=1)
    forged_ms = int((time.time() + 3600) * 1000)  # a sender claiming to be an hour ahead
    make_producer().send(topics.steps, b"{}", timestamp_ms=forged_ms).get(timeout=30)
    consumer = make_consumer(topics.steps)
    [record] = [r for r, _ in zip(consumer, range(1), strict=False)]
    assert abs(record.timestamp / 1000 - time.time()) < 60
    assert record.timestamp_type == 1  # LogAppendTime


def test_the_replication_factor_of_a_one_broker_cluster_is_one(bootstrap: str) -> None:
    assert broker_replication_factor(bootstrap, timeout=30) == 1
