"""NodeAgent: refused rank claims travel with the job's steps; heartbeats name the job."""

from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.config import AgentConfig, KafkaProducerSettings
from trainguard.agents.daemon import NodeAgent
from trainguard.schemas.codec import RecordDecoder
from trainguard.schemas.records import Heartbeat, RankClaim, StepBatch, StepRecord

T0 = 1_795_000_100.0


class RecordingTransport:
    """An in-memory Transport."""

    def __init__(self):
        self.sent = []

    def send(self, topic, key, value):
        self.sent.append((topic, key, value))

    def close(self, timeout=None):
        pass


def _config(**kw):
    fields = {"kafka": KafkaProducerSettings(bootstrap="127.0.0.1:9092"), "cluster": "c1",
              "node": "node-a", "sim_gpus": 2}
    return AgentConfig(**{**fields, **kw})


def _claim(rank=1):
    return RankClaim(rank=rank, ts=T0, step=7, pid=222, uid=1001, holder_pid=111,
                     holder_uid=1000, holder_since=T0 - 60)


def test_refused_claims_are_sent_keyed_by_job_in_a_step_batch_without_steps():
    transport = RecordingTransport()
    pending = [{"job-1": [_claim(1), _claim(2)]}]
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport,
                      claim_sources=[lambda: pending.pop() if pending else {}])
    agent.tick(T0)
    agent.tick(T0 + 1)
    batches = [(k, RecordDecoder(StepBatch).decode(v)) for t, k, v in transport.sent
               if t == "tg.steps.v1"]
    assert len(batches) == 1
    key, batch = batches[0]
    assert key == b"job-1" and batch.job_id == "job-1" and batch.node == "node-a"
    assert batch.steps == [] and [c.rank for c in batch.claims] == [1, 2]
    assert batch.claims[0].holder_pid == 111 and batch.claims[0].pid == 222


def test_a_failing_claim_source_is_counted_and_the_tick_goes_on():
    transport = RecordingTransport()

    def broken():
        raise OSError("boom")

    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport, claim_sources=[broken])
    agent.tick(T0)
    assert agent.collect_errors == 1 and agent.batches_sent == 1


def test_heartbeats_name_the_nodes_job_and_are_keyed_by_it():
    transport = RecordingTransport()
    steps = [[StepRecord(job_id="job-1", rank=0, world_size=2, node="node-a", step=1, ts=T0)]]
    agent = NodeAgent(_config(heartbeat_interval_s=5.0), SimulatedGpus("node-a", 2), transport,
                      step_sources=[lambda: steps.pop() if steps else []])
    for i in range(6):
        agent.tick(T0 + i)
    beats = [(k, RecordDecoder(Heartbeat).decode(v)) for t, k, v in transport.sent
             if "heartbeats" in t]
    assert [(k, hb.job_id) for k, hb in beats] == [(b"job-1", "job-1"), (b"job-1", "job-1")]


def test_an_idle_nodes_heartbeats_name_no_job_and_are_keyed_by_node():
    transport = RecordingTransport()
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport)
    hb = agent.heartbeat(T0)
    assert hb.job_id is None and transport.sent[-1][1] == b"node-a"
