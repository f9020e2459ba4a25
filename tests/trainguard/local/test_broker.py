from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from trainguard.errors import BrokerError
from trainguard.local.broker import (
    KAFKA_VERSION,
    LocalBroker,
    dedupe_buffer_bytes,
    fetch_jars,
    free_ports,
    kafka_home,
)
from trainguard.pipeline.kafka_admin import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def spare_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A second broker on fresh ports, never started by the fixture; stopped at teardown."""
    port, controller_port = free_ports(2)
    broker = LocalBroker(tmp_path / "kafka", port, controller_port, heap="256m")
    yield broker
    broker.stop()


def test_kafka_version_matches_pom() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(kafka_home() / "pom.xml").getroot()
    assert root.findtext("m:properties/m:kafka.version", namespaces=ns) == KAFKA_VERSION


def test_fetch_jars_is_idempotent() -> None:
    libs = fetch_jars()
    started = time.monotonic()
    assert fetch_jars() == libs
    assert time.monotonic() - started < 1.0
    assert any(libs.glob("kafka_2.13-*.jar"))


def test_status_when_never_started(spare_broker: LocalBroker) -> None:
    status = spare_broker.status()
    assert not status.running
    assert status.pid is None
    assert status.bootstrap == f"127.0.0.1:{spare_broker.port}"


def test_stop_when_not_running_is_a_no_op(spare_broker: LocalBroker) -> None:
    spare_broker.stop()
    spare_broker.stop()
    assert not spare_broker.status().running


def test_start_status_stop_lifecycle(spare_broker: LocalBroker) -> None:
    spare_broker.start()
    status = spare_broker.status()
    assert status.running and status.pid is not None
    assert spare_broker.pid_file.read_text().strip() == str(status.pid)
    # The broker took the cleaner's key map sized to its 256 MiB heap (not Kafka's 128 MiB).
    props = (spare_broker.data_dir / "server.properties").read_text()
    assert f"log.cleaner.dedupe.buffer.size={32 << 20}" in props

    spare_broker.start()  # already running: no second process
    assert spare_broker.status().pid == status.pid

    # Another handle on the same data dir (another CLI invocation) sees and stops it.
    LocalBroker(spare_broker.data_dir, spare_broker.port, spare_broker.controller_port).stop()
    assert not spare_broker.status().running
    assert not spare_broker.pid_file.exists()
    spare_broker.stop()


def test_restart_reuses_formatted_storage(spare_broker: LocalBroker) -> None:
    spare_broker.start()
    ensure_topics(spare_broker.bootstrap, ["kept"], partitions=1)
    spare_broker.stop()
    spare_broker.start()
    assert ensure_topics(spare_broker.bootstrap, ["kept"], partitions=1) == []


def test_start_refuses_a_port_in_use(spare_broker: LocalBroker) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", spare_broker.port))
        blocker.listen()
        with pytest.raises(BrokerError, match=rf"port {spare_broker.port} .*--port"):
            spare_broker.start()
    assert spare_broker.status().pid is None


@pytest.mark.parametrize(("heap", "expected"), [
    ("256m", 32 << 20), ("512m", 64 << 20), ("1g", 128 << 20), ("4G", 128 << 20),
    ("300000000", 37_500_000), ("1k", 2 << 20), ("65536K", 8 << 20),
])
def test_the_cleaners_key_map_is_an_eighth_of_the_heap_within_kafkas_bounds(
        heap: str, expected: int) -> None:
    assert dedupe_buffer_bytes(heap) == expected


@pytest.mark.parametrize("heap", ["", "0m", "-1m", "1.5g", "512mb", "m"])
def test_the_cleaners_key_map_refuses_a_heap_size_the_jvm_would_not_read(heap: str) -> None:
    with pytest.raises(BrokerError, match="invalid heap size"):
        dedupe_buffer_bytes(heap)


def test_start_reports_an_early_exit_with_the_log_tail(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    broker = LocalBroker(tmp_path, port, controller_port, heap="1k")  # JVM refuses to boot
    with pytest.raises(BrokerError, match=r"(?s)exited .*heap"):
        broker.start(timeout=30)
    assert broker.status().pid is None


def test_session_broker_round_trips_records(
    new_topic: Callable[..., str],
    make_producer: Callable[..., KafkaProducer],
    make_consumer: Callable[..., KafkaConsumer],
) -> None:
    topic = new_topic("roundtrip")
    producer = make_producer(enable_idempotence=True, compression_type="zstd")
    sent = [f"record-{i}".encode() for i in range(10)]
    for value in sent:
        producer.send(topic, key=b"node-1", value=value)
    producer.flush(timeout=10)

    consumer = make_consumer(topic)
    received = []
    for record in consumer:
        received.append(record.value)
        if len(received) == len(sent):
            break
    assert received == sent  # one key, so one partition, so order is kept


def test_a_cluster_id_starting_with_a_dash_still_formats(spare_broker: LocalBroker) -> None:
    # urlsafe base64 ids start with "-" about once in 64 starts; the tool must not read a flag.
    spare_broker.data_dir.mkdir(parents=True, exist_ok=True)
    (spare_broker.data_dir / "cluster.id").write_text("-abcdefghijklmnopqrstu\n")
    spare_broker.start()
    assert spare_broker.status().running
