"""Consistency state moves between workers per input partition and resumes as if never cut.

A simulated job runs half its ticks through one stage, which exports its partition; a
fresh stage loads the blob and runs the rest. Its findings must equal an uninterrupted
stage's, for scenarios whose checks need memory across the cut (restart continuity,
checkpoint digests, a stalled or killed rank, peer statistics). Damaged, foreign and
oversized blobs are refused and counted, never installed, never raised.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import msgspec
import pytest

from trainguard.agents.sim import JobSimulator, JobSpec, make_scenario
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.pipeline.consistency.codec import StateError, decode_state, encode_state
from trainguard.pipeline.consistency.handoff import MAGIC
from trainguard.schemas.records import Finding, Record

SPEC = JobSpec(job_id="job-h", nodes=2, gpus_per_node=4, tp_size=2, checkpoint_every=10,
               checkpoint_pause_s=1, warmup_steps=3)
Tick = list[tuple[str, Record]]


class _Clock:
    """The wall clock of a replay: the newest event time fed so far."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ticks(scenario: str, n: int, seed: int = 3, spec: JobSpec = SPEC, **params: object
           ) -> list[Tick]:
    sim = JobSimulator(spec, make_scenario(scenario, spec, seed=seed, **params), seed=seed)
    return [[(e.topic, e.record) for e in sim.tick()] for _ in range(n)]


def _feed(stage: ConsistencyStage, clock: _Clock, ticks: Sequence[Tick], part: int = 0
          ) -> list[Finding]:
    out: list[Finding] = []
    for tick in ticks:
        if not tick:
            continue
        clock.now = max(clock.now, max(r.ts for _, r in tick))
        out += stage.observe([r for _, r in tick], sources=[f"{t}:{part}" for t, _ in tick])
        out += stage.flush()
    return out


def _run_with_handoff(ticks: list[Tick], cut: int) -> tuple[list[Finding], ConsistencyStage]:
    clock = _Clock()
    first = ConsistencyStage(clock=clock)
    found = _feed(first, clock, ticks[:cut])
    blobs = {part: first.export(part) for part in first.partitions()}
    second = ConsistencyStage(clock=clock)
    for part, blob in blobs.items():
        assert second.load(part, blob) >= 1
    return found + _feed(second, clock, ticks[cut:]), second


_RESTART = {"at": 30, "down_s": 5, "checkpoint_every": 10}
#: Each sabotage at tick 30: the cuts fall before it, in a restart's gap, and after.
SCENARIOS = {"weight_tamper": _RESTART, "checkpoint_corruption": _RESTART,
             "job_code_change": _RESTART, "job_lr_restart": _RESTART,
             "kill": {"at": 30}, "gradient_corruption": {"at": 30}}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_restored_stage_finds_what_an_uninterrupted_one_finds(scenario: str) -> None:
    ticks = _ticks(scenario, 90, **SCENARIOS[scenario])
    clock = _Clock()
    whole = _feed(ConsistencyStage(clock=clock), clock, ticks)
    assert whole, f"{scenario}: the uninterrupted run found nothing to compare"
    for cut in (25, 33, 45):
        handed, _ = _run_with_handoff(ticks, cut)
        assert handed == whole, f"{scenario} cut at tick {cut}"


def test_a_job_belongs_to_the_partition_of_its_step_records() -> None:
    clock = _Clock()
    stage = ConsistencyStage(clock=clock)
    ticks = _ticks("weight_tamper", 5)
    clock.now = max(r.ts for t in ticks for _, r in t)
    records = [r for t in ticks for _, r in t]
    topics = [topic for t in ticks for topic, _ in t]
    # Samples and heartbeats on partition 1 of theirs, steps on partition 4 of theirs.
    stage.observe(records, sources=[f"{t}:{4 if t == 'steps' else 1}" for t in topics])
    assert stage.partitions() == {"steps:4"}


def test_a_job_seen_only_through_samples_belongs_to_their_partition() -> None:
    clock = _Clock()
    stage = ConsistencyStage(clock=clock)
    samples = [(t, r) for t, r in _ticks("weight_tamper", 3)[2] if t == "samples"]
    clock.now = max(r.ts for _, r in samples)
    stage.observe([r for _, r in samples], sources=["samples:2"] * len(samples))
    assert stage.partitions() == {"samples:2"}


def test_drop_forgets_the_partitions_jobs_and_their_nodes() -> None:
    clock = _Clock()
    stage = ConsistencyStage(clock=clock)
    _feed(stage, clock, _ticks("weight_tamper", 10))
    assert stage.stats()["nodes_tracked"] == 2
    assert stage.drop("steps:1") == 0
    assert stage.drop("steps:0") == 1
    assert stage.jobs == {} and stage.partitions() == set()
    assert stage.stats()["nodes_tracked"] == 0
    assert stage.stats()["steps_closed"] > 0  # counters of forgotten jobs are kept


def test_restore_resumes_a_silent_agents_page() -> None:
    """The silence watch's nodes travel with their job: a node gone quiet still pages."""
    ticks = _ticks("weight_tamper", 30, **_RESTART)
    quiet = [[(t, r) for t, r in tick if getattr(r, "node", "") != SPEC.node_name(1)]
             for tick in ticks[20:]]
    clock = _Clock()
    whole = _feed(ConsistencyStage(clock=clock), clock, ticks[:20] + quiet)
    handed, _ = _run_with_handoff(ticks[:20] + quiet, 20)
    assert "agent_silent" in {f.check for f in whole}
    assert handed == whole


def _blob() -> tuple[bytes, ConsistencyStage]:
    clock = _Clock()
    stage = ConsistencyStage(clock=clock)
    _feed(stage, clock, _ticks("weight_tamper", 20))
    return stage.export("steps:0"), stage


@pytest.mark.parametrize("damage", [
    lambda b: b[: len(b) // 2],                       # truncated
    lambda b: b[:20] + bytes([b[20] ^ 0xFF]) + b[21:],  # a flipped byte
    lambda b: b"",
    lambda b: b"\x93\x01\x02\x03",                    # a baseline-style msgpack blob
    lambda b: MAGIC + b"\x00\x00\x00\x00" + zlib.compress(b"\xc1"),
])
def test_a_damaged_blob_is_counted_and_the_partition_starts_fresh(damage) -> None:  # type: ignore[no-untyped-def]
    blob, _ = _blob()
    stage = ConsistencyStage(clock=_Clock())
    assert stage.load("steps:0", damage(blob)) == 0
    assert stage.jobs == {} and stage.stats()["state_rejected"] == 1


def _reseal(body: bytes) -> bytes:
    return MAGIC + zlib.crc32(body).to_bytes(4, "big") + zlib.compress(body)


def test_a_well_formed_blob_naming_a_foreign_class_is_refused() -> None:
    blob, stage = _blob()
    raw = zlib.decompress(blob[8:])
    version, layout, jobs = msgspec.msgpack.decode(raw)
    evil = msgspec.msgpack.encode([11, "subprocess.Popen", {"args": "true"}])
    fresh = ConsistencyStage(clock=_Clock())
    assert fresh.load("steps:0", _reseal(msgspec.msgpack.encode([version, layout, [evil]]))) == 0
    with pytest.raises(StateError, match="not a state class"):
        decode_state(evil, stage.config)


def test_a_blob_of_other_settings_is_refused() -> None:
    blob, _ = _blob()
    other = ConsistencyStage(ConsistencyConfig(wait_s=ConsistencyConfig().wait_s + 1),
                             clock=_Clock())
    assert other.load("steps:0", blob) == 0
    assert other.stats()["state_rejected"] == 1


def test_a_blob_inflating_past_the_bound_is_refused() -> None:
    blob, stage = _blob()
    small = ConsistencyStage(dataclasses.replace(stage.config, max_state_bytes=1024),
                             clock=_Clock())
    # The same layout but for the bound: reseal with the small stage's fingerprint.
    version, _, jobs = msgspec.msgpack.decode(zlib.decompress(blob[8:]))
    padded = msgspec.msgpack.encode([version, small.layout(), jobs + [b"\x00" * 100_000]])
    assert small.load("steps:0", _reseal(padded)) == 0
    assert small.stats()["state_rejected"] == 1


def test_export_leaves_out_the_least_recently_seen_jobs_past_the_bound() -> None:
    clock = _Clock()
    one = _ticks("weight_tamper", 12)
    other = _ticks("weight_tamper", 12, spec=dataclasses.replace(SPEC, job_id="job-h2",
                                                                  node_prefix="other"))
    config = ConsistencyConfig()
    probe = ConsistencyStage(config, clock=clock)
    _feed(probe, clock, one)
    single = len(zlib.decompress(probe.export("steps:0")[8:]))
    stage = ConsistencyStage(dataclasses.replace(config, max_state_bytes=single + 64),
                             clock=clock)
    _feed(stage, clock, one)
    _feed(stage, clock, other)  # job-h2 seen last: it is kept
    blob = stage.export("steps:0")
    assert stage.stats()["state_jobs_left_out"] == 1
    fresh = ConsistencyStage(stage.config, clock=clock)
    assert fresh.load("steps:0", blob) == 1
    assert set(fresh.jobs) == {"job-h2"}


def test_codec_keeps_shared_objects_shared() -> None:
    shared: list[int] = [1, 2]
    config = ConsistencyConfig()
    a, b = decode_state(encode_state([shared, shared, config], config), config)[:2]
    assert a is b and a == [1, 2]


def test_codec_refuses_to_save_what_it_could_not_load() -> None:
    with pytest.raises(StateError):
        encode_state([lambda: 0], ConsistencyConfig())


def test_restored_nodes_get_their_full_silence_grace_after_a_hand_off() -> None:
    """The wall time a hand-off takes is not an agent's silence; real silence still pages.

    The survivor reads another job's records far ahead (its own partitions kept flowing
    while the victim's waited for the session timeout).
    """
    clock = _Clock()
    stage = ConsistencyStage(clock=clock)
    _feed(stage, clock, _ticks("weight_tamper", 20, **_RESTART))
    last = clock.now
    clock.now += 7  # the victim's snapshot came 7 s of wall time after its last records
    blob = stage.export("steps:0")
    fresh = ConsistencyStage(clock=clock)
    other = dataclasses.replace(SPEC, job_id="job-h2", node_prefix="other")
    ahead = [[(t, r) for t, r in tick if r.ts > last + 25]
             for tick in _ticks("weight_tamper", 50, spec=other, **_RESTART)]
    fresh_clock = clock.now
    _feed(fresh, clock, [t for t in ahead if t])  # moves clock.now to the other job's time
    clock.now = fresh_clock
    assert fresh.load("steps:0", blob) == 1
    clock.now += 2  # reading the backlog of the job taken over
    assert "agent_silent" not in {f.check for f in fresh.flush()}
    clock.now += 7  # and nothing of it arrives: 9 s after the hand-off
    silent = [f for f in fresh.flush() if f.check == "agent_silent"]
    assert {n for f in silent for n in f.nodes} == {SPEC.node_name(0), SPEC.node_name(1)}
