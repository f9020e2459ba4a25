"""Hostile input end to end: poisoned messages on the real broker cost dead letters, never the
worker, while a real sabotage elsewhere is still paged once.

A weight-tamper sabotage runs in one simulated job (real Kafka → worker process → real
Alertmanager → webhook receiver). While it runs, a second producer writes into the same
samples and steps topics one message of each kind that once crashed, blinded or wiped the
worker (#13): invalid UTF-8 inside a JSON string, JSON nested 100,000 deep in an unknown
field, far-future and absurd event times, a rank of 2^20 − 1 in a world over the cap, a
60 KB checksum, duplicate GPU indices, 65 GPUs in a batch, a step batch spanning 101
months, plain garbage and a record of the wrong kind. Two more are valid but were fatal
or silent: a 2-rank step whose ``lr`` values differ by float noise (the argmax crash), and
a forged second report for a step that already has one (``conflicting_report``).

The worker must stay up, page the sabotage exactly once, and hold each poisoned message
in ``dead_letters`` with its reason (and no ``stage_error``: no stage raised).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgspec
import pytest

from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.sim import JobSpec, make_scenario
from trainguard.agents.sim.job import JobSimulator
from trainguard.agents.sim.player import play
from trainguard.agents.transport import KafkaTransport
from trainguard.local.webhook_server import RecordingWebhookServer
from trainguard.schemas.codec import encode
from trainguard.schemas.records import GpuSample, GpuSampleBatch, Heartbeat, StepBatch, StepRecord
from trainguard.schemas.topics import Topics

pytestmark = pytest.mark.integration

SPEED = 4.0  # event seconds per wall second
POISON_AT = 25  # the tick after which the poison is produced (the sabotage is under way)


@pytest.fixture
def stack_pager() -> str:
    """The conftest's stack pages: a webhook receiver behind a real Alertmanager."""
    return "alertmanager"


def _config(tmp_path: Path, am_url: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text("[alerts]\nclear_hold_s = 5.0\n\n"
                    f'[[receivers]]\ntype = "alertmanager"\nname = "am"\nurl = "{am_url}"\n')
    return path


def _step(job: str, rank: int, step: int, ts: float, **kw: object) -> StepRecord:
    fields: dict[str, object] = dict(
        job_id=job, rank=rank, world_size=2, node="poison-node", step=step, ts=ts,
        loss=2.5, grad_norm=1.0, lr=3e-4, param_checksum="9b98a73d0a0d5a98",
        env_fingerprint="a4f917fbf40e3721", seed_fingerprint="3d3108536d54cf73")
    fields.update(kw)
    return StepRecord(**fields)  # type: ignore[arg-type]


def _steps(job: str, steps: list[StepRecord], ts: float, seq: int = 1) -> bytes:
    return encode(StepBatch(cluster="poison", node="poison-node", job_id=job, ts=ts, seq=seq,
                            agent_id="poison-agent", steps=steps))


def _samples(now: float, gpus: list[GpuSample], node: str = "poison-node") -> bytes:
    return encode(GpuSampleBatch(cluster="poison", node=node, ts=now, seq=1,
                                 agent_id="poison-agent", gpus=gpus))


def _with(wire: bytes, **changes: object) -> bytes:
    """``wire`` with top-level fields replaced (what a hand-made message can say)."""
    doc = msgspec.json.decode(wire)
    doc.update(changes)
    return msgspec.json.encode(doc)


def _poison(now: float, topics: Topics) -> list[tuple[str, str, bytes, str]]:
    """(name, topic, value, expected reason) of each poisoned message."""
    good = _samples(now, [GpuSample(index=0), GpuSample(index=1)], node="node-ok")
    deep = b"[" * 100_000 + b"]" * 100_000
    step = _step("job-poison", 0, 1, now)
    months = [_step("job-poison", 0, i, now - i * 31 * 86400) for i in range(101)]
    beat = Heartbeat(cluster="poison", node="poison-node", ts=now, seq=1, agent_id="a",
                     agent_version="1", backend="simulated", uptime_s=1.0, gpu_count=8)
    return [
        ("invalid_utf8", topics.samples, good.replace(b'"node-ok"', b'"node-\xff\xfe"'),
         "not_json"),
        ("deep_nesting", topics.samples, good.replace(b'{"kind"', b'{"junk":' + deep +
                                                       b',"kind"', 1), "invalid"),
        ("garbage", topics.samples, b"\x00\x01 not json at all", "not_json"),
        ("duplicate_gpu", topics.samples, _samples(now, [GpuSample(index=3)] * 2), "invalid"),
        ("65_gpus", topics.samples, _samples(now, [GpuSample(index=i) for i in range(65)]),
         "invalid"),
        ("future_ts", topics.steps, _steps("job-poison", [_with_ts(step, 4e9)], now), "clock"),
        ("huge_ts", topics.steps, _with(_steps("job-poison", [step], now), ts=1e308), "clock"),
        ("huge_rank", topics.steps, _steps("job-poison", [_step(
            "job-poison", 2**20 - 1, 1, now, world_size=2**21)], now), "cap_world_size"),
        ("60kb_checksum", topics.steps, _steps("job-poison", [_step(
            "job-poison", 0, 1, now, param_checksum="0" * 60_000)], now), "invalid"),
        ("101_months", topics.steps, _steps("job-poison", months, now), "clock"),
        ("wrong_kind", topics.steps, encode(beat), "wrong_kind"),
    ]


def _with_ts(rec: StepRecord, ts: float) -> StepRecord:
    return msgspec.structs.replace(rec, ts=ts)


def _valid_but_once_fatal(now: float, topics: Topics) -> list[tuple[str, bytes]]:
    """Float-noise lr between two ranks, and a forged second report (steps topic)."""
    out = []
    for s in range(1, 6):
        lr = 3e-4 * (1 + 1.5e-6) if s >= 2 else 3e-4
        out.append(_steps("job-lrnoise", [_step("job-lrnoise", 0, s, now + s),
                                          _step("job-lrnoise", 1, s, now + s, lr=lr)], now + s, s))
    def forged(rank: int, step: int, **kw: object) -> StepRecord:
        return _step("job-forged", rank, step, now + step, world_size=3, **kw)

    for s in range(1, 4):
        out.append(_steps("job-forged", [forged(r, s) for r in range(3)], now + s, s))
    # Step 4: rank 1's real report (its weights diverged), then a forged copy with the
    # majority's checksum, before rank 0 closes the step. The first stays; the second is
    # evidence (three replicas, so the divergence has a majority to differ from).
    out.append(_steps("job-forged", [forged(1, 4, param_checksum="deadbeefdeadbeef"),
                                     forged(2, 4)], now + 4, 4))
    out.append(_steps("job-forged", [forged(1, 4), forged(0, 4)], now + 4, 5))
    return [(topics.steps, v) for v in out]


def _pages(receiver: RecordingWebhookServer, job_id: str) -> list[dict[str, str]]:
    return [a.labels for n in receiver.notifications()
            if n.receiver == "pager" and n.status == "firing"
            for a in n.alerts if a.labels.get("job_id") == job_id]


def test_poisoned_messages_are_dead_letters_and_the_sabotage_is_still_paged_once(
        bootstrap, local_stack, worker_process, tmp_path, make_producer):
    receiver, am = local_stack.receiver, local_stack.alertmanager
    assert receiver is not None and am is not None
    worker_process.start(extra_args=["--config", str(_config(tmp_path, am.url))])
    prefix = worker_process.prefix
    topics = Topics(prefix)
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    spec = JobSpec(job_id=job_id, cluster=f"c-{prefix}", nodes=2, gpus_per_node=4, tp_size=2,
                   checkpoint_every=10, checkpoint_pause_s=1, warmup_steps=3,
                   node_prefix=f"{prefix}-node")
    scenario = make_scenario("weight_tamper", spec, seed=4, at=12, checkpoint_every=10)
    sim = JobSimulator(spec, scenario, seed=4, start_ts=time.time())
    producer = make_producer()
    sent: dict[str, tuple[str, int, str]] = {}

    def poison(t: int) -> None:
        if t != POISON_AT:
            return
        now = time.time()
        for name, topic, value, reason in _poison(now, topics):
            meta = producer.send(topic, value=value, key=b"poison").get(timeout=30)
            sent[name] = (topic, meta.offset, reason)
        for topic, value in _valid_but_once_fatal(now, topics):
            producer.send(topic, value=value, key=b"valid").get(timeout=30)

    transport = KafkaTransport(KafkaProducerSettings(bootstrap=bootstrap))
    try:
        play([sim], transport.send, topics, 70, speed=SPEED, on_tick=poison)
    finally:
        transport.close(timeout=10)
    assert len(sent) == 11

    # Every poisoned message is a dead letter with its reason (the partition is the key's).
    worker_process.wait_for(
        "SELECT count() FROM {database}.dead_letters FINAL WHERE payload_size > 0 AND "
        "reason != 'stage_error'", len(sent), timeout=60)
    rows = worker_process.query(
        "SELECT topic, offset, reason, message FROM {database}.dead_letters FINAL").rows
    got = {(r[0], int(r[1])): (r[2], r[3]) for r in rows}
    for name, (topic, offset, reason) in sent.items():
        assert (topic, offset) in got, f"{name}: no dead letter at {topic}@{offset}: {got}"
        assert got[(topic, offset)][0] == reason, (name, got[(topic, offset)])
    assert not [r for r in rows if r[2] == "stage_error"], rows  # no stage raised
    assert worker_process.alive(), worker_process.log_tail()

    # The sabotage is paged, once, naming the culprit.
    receiver.wait_for(lambda _r: bool(_pages(receiver, job_id)), timeout=60)
    time.sleep(6)  # one more Alertmanager flush: nothing else may arrive
    pages = _pages(receiver, job_id)
    assert len(pages) == 1, pages
    assert pages[0]["alertname"] == "param_divergence"
    assert pages[0]["rank"] == str(scenario.culprit)

    # The once-fatal valid records went through: lr noise is no finding and no crash, the
    # forged copy is evidence and the real report (the diverged checksum) stayed.
    assert worker_process.wait_for(
        "SELECT count() FROM {database}.steps FINAL WHERE job_id = 'job-lrnoise'", 10) == 10
    found = worker_process.wait_for(
        "SELECT count() FROM {database}.findings FINAL WHERE job_id = 'job-forged' AND "
        "check = 'conflicting_report'", 1)
    assert found == 1
    checks = {r[0] for r in worker_process.query(
        "SELECT DISTINCT check FROM {database}.findings FINAL WHERE job_id IN "
        "('job-lrnoise', 'job-forged')").rows}
    assert "lr_mismatch" not in checks and "param_divergence" in checks, checks
    assert worker_process.alive(), worker_process.log_tail()
