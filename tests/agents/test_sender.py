"""SpoolSender against a fake producer: permanent refusals are dead-lettered, never retried."""

import json
import time

import pytest
from kafka.errors import InvalidRecordError, KafkaTimeoutError, MessageSizeTooLargeError

from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.dead_letter_file import LocalDeadLetters
from trainguard.agents.sender import SpoolSender
from trainguard.agents.spool import Spool


class FakeFuture:
    def __init__(self, exception=None):
        self.is_done = True
        self.exception = exception

    def succeeded(self):
        return self.exception is None

    def failed(self):
        return self.exception is not None


class FakeProducer:
    """Refuses values starting with ``big`` at send() and ``bad`` at delivery, like Kafka;
    fails the first delivery of ``flaky`` with a retriable timeout."""

    def __init__(self, log, **_settings):
        self.log = log

    def send(self, topic, key=None, value=None):
        if value.startswith(b"big"):
            raise MessageSizeTooLargeError("The message is 2000000 bytes when serialized")
        if value.startswith(b"bad"):
            return FakeFuture(InvalidRecordError("broker refused the record"))
        if value.startswith(b"flaky") and value not in self.log["failed_once"]:
            self.log["failed_once"].add(value)
            return FakeFuture(KafkaTimeoutError("delivery timed out"))
        self.log["delivered"].append(value)
        return FakeFuture()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_messages_kafka_refuses_for_good_are_dead_lettered_and_the_rest_go_on(tmp_path):
    spool = Spool(tmp_path / "spool")
    dead = LocalDeadLetters(tmp_path / "spool" / "dead-letters.jsonl")
    log = {"delivered": [], "failed_once": set()}
    sender = SpoolSender(spool, KafkaProducerSettings(bootstrap="h:1"), dead_letters=dead,
                         producer_factory=lambda **kw: FakeProducer(log, **kw))
    values = [b"ok-1", b"big-1", b"ok-2", b"bad-1", b"flaky-1", b"ok-3"]
    for value in values:
        spool.append("tg.steps.v1", b"job-1", value)
    sender.start()
    try:
        _wait_for(lambda: spool.depth == 0)
    finally:
        sender.stop(drain_timeout=0)
    # ok-3 went out with the first attempt; only the timed-out flaky-1 was sent again
    assert log["delivered"] == [b"ok-1", b"ok-2", b"ok-3", b"flaky-1"]
    lines = [json.loads(x) for x in dead.path.read_text().splitlines()]
    assert [(x["reason"], x["topic"], x["key"], x["size"]) for x in lines] == [
        ("message_size_too_large", "tg.steps.v1", "job-1", 5),
        ("invalid_record", "tg.steps.v1", "job-1", 5),
    ]
    assert dead.count == 2 and sender.refused == 2 and dead.by_reason == {
        "message_size_too_large": 1, "invalid_record": 1}
    spool.close()


def test_a_retriable_failure_is_retried_not_dead_lettered(tmp_path):
    spool = Spool(tmp_path / "spool")
    dead = LocalDeadLetters(tmp_path / "dead.jsonl")
    log = {"delivered": [], "failed_once": set()}
    sender = SpoolSender(spool, KafkaProducerSettings(bootstrap="h:1"), dead_letters=dead,
                         producer_factory=lambda **kw: FakeProducer(log, **kw))
    spool.append("t", b"k", b"flaky-2")
    sender.start()
    try:
        _wait_for(lambda: spool.depth == 0)
    finally:
        sender.stop(drain_timeout=0)
    assert log["delivered"] == [b"flaky-2"] and dead.count == 0 and sender.errors == 1
    spool.close()


def test_the_dead_letter_file_is_bounded_and_a_failed_write_is_counted(tmp_path):
    dead = LocalDeadLetters(tmp_path / "d.jsonl", max_bytes=4096, max_value_bytes=512)
    for i in range(100):
        dead.add("t", b"k", bytes([i]) * 2000, reason="too_large")
    files = sorted(tmp_path.glob("d.jsonl*"))
    assert [f.name for f in files] == ["d.jsonl", "d.jsonl.1"]
    assert sum(f.stat().st_size for f in files) <= 4096
    last = json.loads(files[0].read_text().splitlines()[-1])
    assert last["truncated"] is True and last["size"] == 2000 and dead.count == 100
    blocked = LocalDeadLetters(tmp_path / "d.jsonl" / "x.jsonl")  # parent is a file
    blocked.add("t", b"k", b"v", reason="too_large")
    assert blocked.count == 1 and blocked.write_errors == 1


def test_a_dead_letter_file_smaller_than_its_lines_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        LocalDeadLetters(tmp_path / "d", max_bytes=1000, max_value_bytes=512)


def test_the_sender_keeps_running_when_a_step_fails(tmp_path):
    class BrokenSpool(Spool):
        calls = 0

        def read(self, max_records, timeout=0.0):
            BrokenSpool.calls += 1
            if BrokenSpool.calls == 1:
                raise OSError(5, "Input/output error")
            return super().read(max_records, timeout)

    spool = BrokenSpool(tmp_path / "spool")
    log = {"delivered": [], "failed_once": set()}
    sender = SpoolSender(spool, KafkaProducerSettings(bootstrap="h:1"),
                         producer_factory=lambda **kw: FakeProducer(log, **kw))
    spool.append("t", b"k", b"ok")
    sender.start()
    try:
        _wait_for(lambda: spool.depth == 0)
    finally:
        sender.stop(drain_timeout=0)
    assert log["delivered"] == [b"ok"] and sender.errors == 1
    spool.close()
