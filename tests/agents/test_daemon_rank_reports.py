"""NodeAgent: rank events and manifests travel in step batches of their job, split to fit."""

import json

from tests.agents.test_daemon import RecordingTransport, _config, _small_request_config
from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.daemon import NodeAgent
from trainguard.agents.dead_letter_file import LocalDeadLetters
from trainguard.agents.rank_events import JobRankReports
from trainguard.schemas.codec import RecordDecoder
from trainguard.schemas.ranks import EnvManifest, RankEvent
from trainguard.schemas.records import StepBatch, StepRecord

T0 = 1_795_000_100.0


def _event(rank=0, kind="exited", **kw):
    return RankEvent(rank=rank, ts=T0, event=kind, pid=1000 + rank, **kw)


def _manifest(fingerprint="f" * 64, rank=0, entries=None):
    return EnvManifest(rank=rank, ts=T0, fingerprint=fingerprint,
                       entries=entries or {"script:train.py": "ab" * 32})


def _once(reports):
    pending = [reports]
    return lambda: pending.pop() if pending else {}


def _step_batches(transport):
    return [(k, RecordDecoder(StepBatch).decode(v)) for t, k, v in transport.sent
            if t == "tg.steps.v1"]


def test_events_and_a_manifest_are_sent_keyed_by_job_in_step_batches():
    transport = RecordingTransport()
    reports = {"job-1": JobRankReports(
        events=[_event(0, signal=9), _event(1, "bye", reason="finished", step=7)],
        manifests=[_manifest()])}
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport,
                      rank_sources=[_once(reports)])
    agent.tick(T0)
    agent.tick(T0 + 1)
    # The manifest first (it must precede the steps of its tick), then the events.
    [(key, first), (key2, batch)] = _step_batches(transport)
    assert key == key2 == b"job-1" and batch.job_id == "job-1" and batch.node == "node-a"
    assert first.manifests == (_manifest(),) and first.events == () and first.steps == []
    assert batch.steps == [] and batch.ts == T0
    assert [(e.rank, e.event, e.signal, e.reason) for e in batch.events] == [
        (0, "exited", 9, None), (1, "bye", None, "finished")]
    assert agent.rank_events_sent == 2 and agent.manifests_sent == 1


def test_rank_reports_follow_the_jobs_steps_of_the_same_tick():
    transport = RecordingTransport()
    step = StepRecord(job_id="job-1", rank=0, world_size=2, node="node-a", step=3, ts=T0)
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport,
                      step_sources=[lambda: [step]],
                      rank_sources=[_once({"job-1": JobRankReports(events=[_event()])})])
    agent.tick(T0)
    batches = [b for _, b in _step_batches(transport)]
    assert [(len(b.steps), len(b.events)) for b in batches] == [(1, 0), (0, 1)]
    assert batches[1].seq == batches[0].seq + 1


def test_more_events_than_a_batch_holds_are_split_in_order():
    transport = RecordingTransport()
    events = [_event(rank=i) for i in range(1500)]
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport,
                      rank_sources=[_once({"job-1": JobRankReports(events=events)})])
    agent.tick(T0)
    batches = [b for _, b in _step_batches(transport)]
    assert [len(b.events) for b in batches] == [1024, 476]
    assert [e.rank for b in batches for e in b.events] == list(range(1500))
    assert len({b.seq for b in batches}) == 2


def test_more_manifests_than_a_batch_holds_are_split():
    transport = RecordingTransport()
    manifests = [_manifest(fingerprint=f"{i:064x}", rank=i) for i in range(20)]
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport,
                      rank_sources=[_once({"job-1": JobRankReports(
                          events=[_event()], manifests=manifests)})])
    agent.tick(T0)
    batches = [b for _, b in _step_batches(transport)]
    assert [(len(b.events), len(b.manifests)) for b in batches] == [(0, 16), (0, 4), (1, 0)]
    assert [m.rank for b in batches for m in b.manifests] == list(range(20))


def test_batches_stay_below_the_message_size_and_a_manifest_too_large_is_dead_lettered(
        tmp_path):
    transport = RecordingTransport()
    dead = LocalDeadLetters(tmp_path / "dead.jsonl")
    huge = _manifest(fingerprint="e" * 64,
                     entries={f"torch:nn/m{i:05d}.py": "cd" * 32 for i in range(1200)})
    small = _manifest(fingerprint="a" * 64)
    events = [_event(rank=i, kind="waiting", since=T0, collective=i, step=i)
              for i in range(600)]
    agent = NodeAgent(_small_request_config(), SimulatedGpus("node-a", 1), transport,
                      rank_sources=[_once({"j1": JobRankReports(
                          events=events, manifests=[huge, small])})], dead_letters=dead)
    agent.tick(T0)
    sent = [v for t, _, v in transport.sent if t == "tg.steps.v1"]
    assert len(sent) > 2 and all(len(v) <= agent.max_message_bytes for v in sent)
    batches = [RecordDecoder(StepBatch).decode(v) for v in sent]
    assert [e.rank for b in batches for e in b.events] == list(range(600))
    assert [m.fingerprint for b in batches for m in b.manifests] == ["a" * 64]
    (line,) = [json.loads(x) for x in dead.path.read_text().splitlines()]
    assert line["reason"] == "too_large" and line["key"] == "j1"
    assert agent.oversized == 1


def test_a_failing_rank_source_is_counted_and_the_tick_goes_on():
    transport = RecordingTransport()

    def broken():
        raise OSError("boom")

    agent = NodeAgent(_config(), SimulatedGpus("node-a", 1), transport, rank_sources=[broken])
    agent.tick(T0)
    assert agent.collect_errors == 1 and agent.batches_sent == 1
