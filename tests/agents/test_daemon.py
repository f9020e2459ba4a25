import threading
import time

import pytest

from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.config import AgentConfig, KafkaProducerSettings
from trainguard.agents.daemon import NodeAgent
from trainguard.agents.fleet import SimulatedFleet
from trainguard.errors import ConfigError
from trainguard.schemas.codec import RecordDecoder
from trainguard.schemas.records import GpuSampleBatch, Heartbeat, StepBatch, StepRecord


class RecordingTransport:
    """An in-memory Transport: unit tests only (integration tests use the real broker)."""

    def __init__(self):
        self.sent = []
        self.flushed = 0

    def send(self, topic, key, value):
        self.sent.append((topic, key, value))

    def flush(self, timeout=None):
        self.flushed += 1

    def close(self, timeout=None):
        pass


def _config(**kw):
    fields = {"kafka": KafkaProducerSettings(bootstrap="127.0.0.1:9092"), "cluster": "c1",
              "node": "node-a", "sim_gpus": 2}
    return AgentConfig(**{**fields, **kw})


def test_tick_sends_one_batch_keyed_by_node_with_every_gpu():
    transport = RecordingTransport()
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport)
    agent.tick(1_795_000_100.0)
    samples = [m for m in transport.sent if m[0] == "tg.gpu-samples.v1"]
    assert len(samples) == 1
    topic, key, value = samples[0]
    batch = RecordDecoder(GpuSampleBatch).decode(value)
    assert key == b"node-a"
    assert batch.ts == 1_795_000_100.0 and batch.seq == 0 and len(batch.gpus) == 2


def test_heartbeats_follow_their_interval_in_event_time():
    transport = RecordingTransport()
    agent = NodeAgent(_config(heartbeat_interval_s=5.0), SimulatedGpus("node-a", 2), transport)
    for i in range(11):
        agent.tick(1_795_000_100.0 + i)
    beats = [RecordDecoder(Heartbeat).decode(v) for t, _, v in transport.sent if "heartbeats" in t]
    assert [b.ts - 1_795_000_100.0 for b in beats] == [0.0, 5.0, 10.0]
    assert beats[-1].counters.batches_sent == 11


def test_a_failing_collector_is_counted_and_does_not_stop_the_agent():
    class Broken(SimulatedGpus):
        def collect(self, ts):
            raise RuntimeError("driver hiccup")

    transport = RecordingTransport()
    agent = NodeAgent(_config(), Broken("node-a", 1), transport)
    assert agent.tick(1.0) is None
    assert agent.collect_errors == 1


def test_run_ticks_on_schedule_until_the_limit():
    transport = RecordingTransport()
    agent = NodeAgent(_config(interval_s=0.1, heartbeat_interval_s=1.0), SimulatedGpus("node-a", 1),
                      transport)
    assert agent.run(threading.Event(), max_ticks=3) == 3
    assert agent.batches_sent == 3 and agent.tick_overruns == 0


def test_an_overrunning_tick_is_counted_not_hidden():
    class Slow(SimulatedGpus):
        def collect(self, ts):
            time.sleep(0.15)
            return super().collect(ts)

    agent = NodeAgent(_config(interval_s=0.1, heartbeat_interval_s=1.0), Slow("node-a", 1),
                      RecordingTransport())
    agent.run(threading.Event(), max_ticks=3)
    assert agent.tick_overruns == 3


def test_steps_from_all_sources_travel_as_one_batch_per_job_keyed_by_job():
    def step(job, rank):
        return StepRecord(job_id=job, rank=rank, world_size=4, node="node-a", step=1, ts=1.0)

    sources = [lambda: [step("j1", 0), step("j2", 0)], lambda: [step("j1", 1)]]
    transport = RecordingTransport()
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport, step_sources=sources)
    agent.tick(1_795_000_100.0)
    sent = {k: RecordDecoder(StepBatch).decode(v) for t, k, v in transport.sent if "steps" in t}
    assert set(sent) == {b"j1", b"j2"}
    assert [s.rank for s in sent[b"j1"].steps] == [0, 1]
    assert agent.steps_sent == 3


def test_heartbeat_carries_the_gauges_it_is_given():
    transport = RecordingTransport()
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport,
                      gauges=lambda: {"spool_depth": 12, "cpu_pct": 0.4})
    hb = agent.heartbeat(1.0)
    assert hb.counters.spool_depth == 12 and hb.counters.cpu_pct == 0.4


def test_fleet_names_nodes_and_sends_one_batch_per_node_per_tick():
    transport = RecordingTransport()
    fleet = SimulatedFleet(_config(), transport, nodes=3, node_prefix="n")
    sent = fleet.run(4, start_ts=1_795_000_100.0, realtime=False)
    keys = {k for t, k, _ in transport.sent if "gpu-samples" in t}
    assert sent == 12 and keys == {b"n-000", b"n-001", b"n-002"}


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"node": "bad node"}, "bad node name"),
        ({"interval_s": 0.05}, "interval_s must be within 0.1..3600"),
        ({"heartbeat_interval_s": 0.5}, "heartbeat_interval_s"),
    ],
)
def test_bad_agent_settings_are_rejected_with_the_value(kw, fragment):
    base = {"kafka": KafkaProducerSettings(bootstrap="h:1"), "node": "n"}
    base.update(kw)
    with pytest.raises(ConfigError, match=fragment):
        AgentConfig(**base)


@pytest.mark.parametrize("bootstrap", ["", "nohost", "h:port"])
def test_bad_bootstrap_servers_are_rejected(bootstrap):
    with pytest.raises(ConfigError):
        KafkaProducerSettings(bootstrap=bootstrap)


def test_unknown_compression_lists_the_choices():
    with pytest.raises(ConfigError, match="expected one of: none, gzip, lz4, zstd"):
        KafkaProducerSettings(bootstrap="h:1", compression="zsdt")  # type: ignore[arg-type]


def test_a_node_running_one_job_keys_its_samples_by_that_job_until_it_is_long_gone():
    transport, pending = RecordingTransport(), []
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport,
                      step_sources=[lambda: pending.copy() or []])
    t0 = 1_795_000_100.0
    pending.append(StepRecord(job_id="llm-7", rank=0, world_size=2, node="node-a", step=1, ts=t0))
    agent.tick(t0)
    pending.clear()
    agent.tick(t0 + 300)  # no steps (a checkpoint save): still the job's node
    agent.tick(t0 + 700)  # silent for longer than the job memory: back to the node key
    samples = [(k, RecordDecoder(GpuSampleBatch).decode(v)) for t, k, v in transport.sent
               if t == "tg.gpu-samples.v1"]
    assert [(k, b.job_id) for k, b in samples] == [
        (b"llm-7", "llm-7"), (b"llm-7", "llm-7"), (b"node-a", None)]


def test_checkpoint_reports_go_out_as_checkpoint_events_keyed_by_job():
    from trainguard.agents.reporter import CheckpointReport
    from trainguard.schemas.records import CheckpointEvent

    transport = RecordingTransport()
    report = CheckpointReport(job_id="llm-7", rank=3, node="node-a", step=100, ts=7.0,
                              action="load", checkpoint_id="c/100", digest="0123abcd")
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport,
                      checkpoint_sources=[lambda: [report]])
    agent.tick(1_795_000_100.0)
    (sent,) = [(k, v) for t, k, v in transport.sent if t == "tg.steps.v1"]
    event = RecordDecoder(CheckpointEvent).decode(sent[1])
    assert sent[0] == b"llm-7" and event.cluster == "c1" and event.action == "load"
    assert (event.rank, event.digest, event.checkpoint_id) == (3, "0123abcd", "c/100")


def test_ticks_fall_on_wall_clock_boundaries_so_nodes_sample_the_same_instant():
    from trainguard.agents.daemon import _to_boundary

    assert _to_boundary(1_795_000_100.25, 1.0) == 0.75
    assert _to_boundary(1_795_000_100.0, 1.0) == 0.0
    assert abs(_to_boundary(1_795_000_101.0, 5.0) - 4.0) < 1e-9


# -- delivery never wedges (issue 13)


def _small_request_config():
    return _config(kafka=KafkaProducerSettings(bootstrap="127.0.0.1:9092",
                                               max_request_size=64 * 1024))


def _steps(n, **fields):
    return [StepRecord(job_id="j1", rank=i % 8, world_size=8, node="node-a", step=i, ts=1.0,
                       **fields) for i in range(n)]


def test_a_large_step_batch_is_split_below_the_max_request_size_in_order():
    transport = RecordingTransport()
    records = _steps(600, loss=2.5, grad_norm=1.0, lr=3e-4, env_fingerprint="e" * 64)
    agent = NodeAgent(_small_request_config(), SimulatedGpus("node-a", 1), transport,
                      step_sources=[lambda: records])
    agent.tick(1_795_000_100.0)
    sent = [v for t, _, v in transport.sent if t == "tg.steps.v1"]
    assert len(sent) > 1
    assert all(len(v) <= agent.max_message_bytes < 64 * 1024 for v in sent)
    batches = [RecordDecoder(StepBatch).decode(v) for v in sent]
    assert [s.step for b in batches for s in b.steps] == list(range(600))
    assert len({b.seq for b in batches}) == len(batches) and agent.steps_sent == 600


def test_a_step_too_large_alone_goes_to_the_dead_letter_file_and_the_rest_is_sent(tmp_path):
    import json

    from trainguard.agents.dead_letter_file import LocalDeadLetters

    transport = RecordingTransport()
    dead = LocalDeadLetters(tmp_path / "dead.jsonl")
    records = _steps(3)
    huge = StepRecord(job_id="j1", rank=0, world_size=8, node="node-a", step=99, ts=1.0,
                      param_checksum="f" * 70_000)
    agent = NodeAgent(_small_request_config(), SimulatedGpus("node-a", 1), transport,
                      step_sources=[lambda: [records[0], huge, *records[1:]]], dead_letters=dead)
    agent.tick(1_795_000_100.0)
    sent = [RecordDecoder(StepBatch).decode(v) for t, _, v in transport.sent if "steps" in t]
    assert [s.step for b in sent for s in b.steps] == [0, 1, 2]
    (line,) = [json.loads(x) for x in dead.path.read_text().splitlines()]
    assert line["reason"] == "too_large" and line["size"] > 70_000 and line["key"] == "j1"
    assert dead.count == 1 and agent.oversized == 1


def test_a_failing_step_source_costs_its_tick_only():
    def broken():
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    transport = RecordingTransport()
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport,
                      step_sources=[broken, lambda: _steps(2)],
                      checkpoint_sources=[broken])
    agent.tick(1_795_000_100.0)
    steps = [RecordDecoder(StepBatch).decode(v) for t, _, v in transport.sent if "steps" in t]
    assert [s.step for b in steps for s in b.steps] == [0, 1]
    assert agent.batches_sent == 1 and agent.collect_errors == 2


def test_heartbeat_counters_stay_within_the_wire_bound_whatever_a_gauge_says():
    transport = RecordingTransport()
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport,
                      gauges=lambda: {"datagrams_dropped": 2**64, "dead_lettered": 4})
    agent.heartbeat(1.0)
    (value,) = [v for t, _, v in transport.sent if "heartbeats" in t]
    counters = RecordDecoder(Heartbeat).decode(value).counters
    assert counters.datagrams_dropped == 2**63 - 1 and counters.dead_lettered == 4


def test_a_too_small_max_request_size_is_rejected():
    with pytest.raises(ConfigError, match="max_request_size"):
        KafkaProducerSettings(bootstrap="h:1", max_request_size=1000)


def test_the_witness_reports_reach_the_transport_keyed_by_the_nodes_job(tmp_path):
    import hashlib

    from trainguard.agents.collectors.witness import Witness
    from trainguard.agents.config import WitnessSettings
    from trainguard.schemas.records import WitnessReport

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    witness = Witness(WitnessSettings(checkpoint_dirs=(ckpt,), mb_per_s=0, scan_interval_s=0.05),
                      cluster="c1", node="node-a")
    witness.start()
    try:
        transport = RecordingTransport()
        step = StepRecord(job_id="job-7", rank=0, world_size=1, node="node-a", step=1,
                          ts=1_795_000_100.0)
        agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport,
                          step_sources=[lambda: [step]], witness_sources=[witness.poll])
        agent.tick(1_795_000_100.0)  # the node's job is now job-7
        (ckpt / "rank-0.pt").write_bytes(b"weights")
        decoder = RecordDecoder(WitnessReport)
        deadline = time.monotonic() + 30
        reports = []
        while not reports and time.monotonic() < deadline:
            time.sleep(0.05)
            agent.tick(1_795_000_101.0)
            reports = [(k, decoder.decode(v)) for t, k, v in transport.sent
                       if t == "tg.steps.v1" and b'"kind":"witness"' in v]
    finally:
        witness.stop()
    [(key, report)] = reports
    assert key == b"job-7" and report.job_id == "job-7"
    assert report.digest == hashlib.sha256(b"weights").hexdigest()
    assert report.path == str(ckpt / "rank-0.pt")
