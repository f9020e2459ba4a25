"""Shared fixtures: one real Kafka broker per test session, unique topics, client factories."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from trainguard.local.broker import LocalBroker, free_ports
from trainguard.pipeline.kafka_admin import ensure_topics


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A local broker on free ports, started on first use and stopped after the session."""
    port, controller_port = free_ports(2)
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), port, controller_port)
    with broker:
        yield broker


@pytest.fixture(scope="session")
def secure_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A second local broker in secure mode: SASL_SSL (SCRAM users admin, worker, agent),
    TLS with its own CA, and ACLs; started on first use, stopped after the session."""
    port, controller_port = free_ports(2)
    broker = LocalBroker(tmp_path_factory.mktemp("kafka-secure"), port, controller_port,
                         secure=True)
    with broker:
        yield broker


@pytest.fixture
def bootstrap(kafka_broker: LocalBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def new_topic(bootstrap: str) -> Callable[..., str]:
    """Factory: ``new_topic("prefix", partitions=3)`` creates a uniquely named topic."""

    def make(prefix: str = "test", *, partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        ensure_topics(bootstrap, [name], partitions=partitions)
        return name

    return make


@pytest.fixture
def make_producer(bootstrap: str) -> Iterator[Callable[..., KafkaProducer]]:
    """Factory for ``KafkaProducer(acks="all", **overrides)``, closed at teardown."""
    producers: list[KafkaProducer] = []

    def make(**overrides: Any) -> KafkaProducer:
        producer = KafkaProducer(**{"bootstrap_servers": bootstrap, "acks": "all", **overrides})
        producers.append(producer)
        return producer

    yield make
    for producer in producers:
        producer.close(timeout=10)


@pytest.fixture
def make_consumer(bootstrap: str) -> Iterator[Callable[..., KafkaConsumer]]:
    """Factory for a consumer of ``*topics`` in a fresh group, reading from the earliest offset."""
    consumers: list[KafkaConsumer] = []

    def make(*topics: str, **overrides: Any) -> KafkaConsumer:
        config = {
            "bootstrap_servers": bootstrap,
            "group_id": f"test-{uuid.uuid4().hex[:12]}",
            "auto_offset_reset": "earliest",
            "consumer_timeout_ms": 10_000,
            **overrides,
        }
        consumer = KafkaConsumer(*topics, **config)
        consumers.append(consumer)
        return consumer

    yield make
    for consumer in consumers:
        consumer.close()
