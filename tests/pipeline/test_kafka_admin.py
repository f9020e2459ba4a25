from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer

from trainguard.errors import BrokerError
from trainguard.local.broker import free_port
from trainguard.pipeline.kafka_admin import ensure_topics, wait_for_broker

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
