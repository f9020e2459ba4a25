"""Agents sign what they send: the spool sender and the direct transport, with the node's key."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.agents.test_daemon import RecordingTransport, _config
from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.config_loader import load_agent_config
from trainguard.agents.daemon import NodeAgent
from trainguard.agents.fleet import SimulatedFleet
from trainguard.agents.runtime import load_node_key
from trainguard.agents.sender import SpoolSender
from trainguard.agents.spool import Spool
from trainguard.agents.transport import KafkaTransport
from trainguard.errors import ConfigError
from trainguard.schemas.auth import FleetSecret, FleetSigner, Verifier, derive_node_key, header_map
from trainguard.schemas.codec import RecordDecoder
from trainguard.schemas.keyfiles import write_node_key
from trainguard.schemas.records import StepBatch, StepRecord

FLEET = FleetSecret(b"q" * 32)
KEY = derive_node_key(FLEET, "node-a")


class AckedFuture:
    """A delivery that succeeded at once (what both senders ask of kafka-python's futures)."""

    is_done = True
    exception = None

    def succeeded(self) -> bool:
        return True

    def failed(self) -> bool:
        return False

    def add_callback(self, fn, *args):
        fn(*args, None)
        return self

    def add_errback(self, fn, *args):
        return self


class HeaderProducer:
    """Records what it was asked to send, headers included; acknowledges at once."""

    def __init__(self, sent: list, **_settings: object) -> None:
        self.sent = sent

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, key, value, headers))
        return AckedFuture()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def _verified(sent: list) -> list[str | None]:
    verifier = Verifier([FLEET])
    return [verifier.verify(t, k, v, header_map(h)).node for t, k, v, h in sent]


def test_the_spool_sender_signs_every_message_with_the_node_key(tmp_path: Path) -> None:
    sent: list = []
    spool = Spool(tmp_path / "spool")
    sender = SpoolSender(spool, KafkaProducerSettings(bootstrap="h:1"), node_key=KEY,
                         producer_factory=lambda **kw: HeaderProducer(sent, **kw))
    for i in range(3):
        spool.append("tg.steps.v1", b"job-1", b"value-%d" % i)
    sender.start()
    try:
        deadline = time.monotonic() + 10
        while spool.depth and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sender.stop(drain_timeout=0)
        spool.close()
    assert _verified(sent) == ["node-a"] * 3


def test_the_kafka_transport_signs_with_its_key_unless_given_headers() -> None:
    sent: list = []
    transport = KafkaTransport(KafkaProducerSettings(bootstrap="h:1"), node_key=KEY,
                               producer_factory=lambda **kw: HeaderProducer(sent, **kw))
    transport.send("tg.gpu-samples.v1", b"node-a", b"v")
    other = FleetSigner(FLEET).headers("node-b", "tg.gpu-samples.v1", b"k", b"w")
    transport.send("tg.gpu-samples.v1", b"k", b"w", other)
    assert _verified(sent) == ["node-a", "node-b"]


def test_a_transport_without_a_key_sends_no_headers() -> None:
    sent: list = []
    transport = KafkaTransport(KafkaProducerSettings(bootstrap="h:1"),
                               producer_factory=lambda **kw: HeaderProducer(sent, **kw))
    transport.send("t", b"k", b"v")
    assert sent == [("t", b"k", b"v", None)]


def test_a_simulated_fleet_with_a_signer_signs_each_node_as_itself() -> None:
    sent: list = []
    transport = KafkaTransport(KafkaProducerSettings(bootstrap="h:1"),
                               producer_factory=lambda **kw: HeaderProducer(sent, **kw))
    fleet = SimulatedFleet(_config(), transport, nodes=3, node_prefix="sim",
                           signer=FleetSigner(FLEET))
    fleet.tick(1_795_000_100.0)
    assert sorted(set(_verified(sent))) == ["sim-000", "sim-001", "sim-002"]


def test_the_agent_stamps_its_own_node_on_trainers_step_records() -> None:
    transport = RecordingTransport()
    step = StepRecord(job_id="j", rank=0, world_size=1, node="gpu-01.cluster.local", step=1,
                      ts=1.0)
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport,
                      step_sources=[lambda: [step]])
    agent.tick(1_795_000_100.0)
    [batch] = [RecordDecoder(StepBatch).decode(v) for t, _, v in transport.sent if "steps" in t]
    assert batch.node == "node-a" and [s.node for s in batch.steps] == ["node-a"]


def test_the_node_key_file_is_loaded_and_must_be_this_nodes(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_node_key(path, KEY)
    assert load_node_key(_config(node_key_file=path)) == KEY
    with pytest.raises(ConfigError, match="is for node 'node-a', but this agent is node 'b'"):
        load_node_key(_config(node="b", node_key_file=path))
    assert load_node_key(_config()) is None


def test_the_node_key_file_comes_from_the_environment(tmp_path: Path) -> None:
    env = {"TRAINGUARD_NODE_KEY_FILE": str(tmp_path / "k")}
    assert load_agent_config(None, env).node_key_file == tmp_path / "k"
