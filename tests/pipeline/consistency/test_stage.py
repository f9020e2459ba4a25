import random

import pytest

from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed, first
from tests.pipeline.fakes import Clock
from trainguard.errors import ConfigError
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Finding


def _faulty_run(seed=1):
    """Per-node batches of a job with three faults: a diverged replica (rank 5 from step
    30), a silent rank (9 from step 50), a poisoned rank (2 from step 60); with samples."""
    job = FakeJob(24, seed=seed)
    out = []
    for s in range(1, 200):
        over = {}
        if s >= 30:
            over[5] = {"param_checksum": f"bad-{s}"}
        if s >= 60:
            over[2] = {"loss": 2.0 * (1 + 0.03 * job.rng.gauss(0, 1)) * 1.08}
        out += job.step(s, over=over, skip={9} if s >= 50 else ())
        out += job.samples(T0 + s + 0.5)
    return out


def _ids(found):
    return sorted((f.check, f.finding_id, tuple(f.ranks)) for f in first(found))


def test_the_same_input_gives_the_same_finding_ids():
    a = feed(ConsistencyStage(), [[b] for b in _faulty_run()])
    b = feed(ConsistencyStage(), [[b] for b in _faulty_run()])
    assert _ids(a) == _ids(b)
    assert {c for c, _, _ in _ids(a)} == {"param_divergence", "rank_missing", "loss_outlier"}


def test_shuffled_arrival_within_the_wait_gives_the_same_findings_as_ordered():
    records = _faulty_run()
    ordered = feed(ConsistencyStage(), [[b] for b in sorted(records, key=lambda r: r.ts)])
    rng = random.Random(7)
    late = sorted(records, key=lambda r: r.ts + rng.uniform(0.0, 2.0))  # < wait_s = 3 s
    shuffled = feed(ConsistencyStage(), [[b] for b in late])
    assert _ids(shuffled) == _ids(ordered)
    assert [(f.check, f.ranks, f.step) for f in first(ordered)] == [
        ("param_divergence", [5], 30), ("rank_missing", [9], 50),
        ("loss_outlier", [2], first(ordered)[2].step)]


def test_a_persisting_fault_is_one_finding_re_emitted_at_most_every_repeat_s():
    job = FakeJob(8, noise=False)
    batches = [job.step(s, over={3: {"lr": 1e-3}}) for s in range(1, 300)]
    once = feed(ConsistencyStage(ConsistencyConfig(repeat_s=0)), batches)
    assert len(once) == 1
    job = FakeJob(8, noise=False)
    batches = [job.step(s, over={3: {"lr": 1e-3}}) for s in range(1, 300)]
    repeated = feed(ConsistencyStage(), batches)
    assert len({f.finding_id for f in repeated}) == 1
    assert [f.last_seen - T0 for f in repeated] == [1, 61, 121, 181, 241]
    assert {f.first_seen for f in repeated} == {T0 + 1}


def test_a_cleared_fault_that_returns_is_a_new_finding():
    job = FakeJob(8, noise=False)
    bad = set(range(10, 20)) | set(range(80, 90))
    found = feed(ConsistencyStage(), [job.step(s, over={3: {"lr": 1e-3}} if s in bad else None)
                                      for s in range(1, 120)])
    opened = [f for f in found if f.cleared_at is None]
    assert [(f.check, f.step) for f in opened] == [("lr_mismatch", 10), ("lr_mismatch", 80)]
    assert opened[0].finding_id != opened[1].finding_id


def test_a_fault_that_clears_emits_one_notice_with_the_same_id():
    job = FakeJob(8, noise=False)
    bad = set(range(10, 20))
    found = feed(ConsistencyStage(), [job.step(s, over={3: {"lr": 1e-3}} if s in bad else None)
                                      for s in range(1, 80)])
    assert [(f.step, f.cleared_at is not None) for f in found] == [(10, False), (10, True)]
    opened, cleared = found
    assert cleared.finding_id == opened.finding_id and cleared.ranks == [3]
    assert opened.evidence["world_size"] == 8  # so an alert can tell a job-wide fault
    # Cleared after clear_steps (20) clean steps from step 20, in event time.
    assert cleared.cleared_at is not None and T0 + 38 <= cleared.cleared_at <= T0 + 41


def test_a_clean_restart_from_a_checkpoint_raises_nothing():
    job, stage = FakeJob(16, seed=3), ConsistencyStage()
    groups = [job.step(s) + job.samples(T0 + s + 0.5) for s in range(1, 101)]
    groups.append(job.checkpoint("save", "ckpt/100", 100, T0 + 100.5))
    groups += [job.step(s) + job.samples(T0 + s + 0.5) for s in range(101, 140)]
    # Every rank stops at 139, the GPUs idle for 20 s, all load step 100 and go on.
    groups += [job.samples(T0 + t + 0.5, util=0.0) for t in range(140, 160)]
    groups.append(job.checkpoint("load", "ckpt/100", 100, T0 + 160))
    groups += [job.step(s, T0 + 60 + s) + job.samples(T0 + 60.5 + s)
               for s in range(101, 250)]
    found = feed(stage, groups)
    assert found == []
    stats = stage.stats()
    assert stats["restarts"] == 1 and stats["loads_checked"] == 16
    assert stats["steps_closed"] == 139 + 149


def test_new_code_after_a_restart_is_not_a_fingerprint_change_but_a_job_wide_code_change():
    job = FakeJob(8, noise=False)
    groups = [job.step(s) for s in range(1, 60)]
    groups += [job.step(s, T0 + 100 + s, over={r: {"env_fingerprint": "env-0002"}
                                              for r in range(8)}) for s in range(40, 90)]
    found = feed(ConsistencyStage(), groups)
    assert {f.check for f in found} == {"code_changed"}  # no code_fingerprint
    assert {(tuple(f.ranks), tuple(f.nodes), f.step) for f in found} == {((), (), 40)}


def test_a_restart_from_the_latest_checkpoint_may_bring_new_code_reported_job_wide():
    # Steps do not go back (the checkpoint is the last step); the loads mark the restart,
    # and a load delivered twice is still one restart. The new code is no peer's fault:
    # one job-wide code_changed (for an approval to sanction), no code_fingerprint.
    job, stage = FakeJob(8, noise=False), ConsistencyStage()
    groups = [job.step(s) for s in range(1, 60)]
    groups.append(job.checkpoint("save", "ckpt/59", 59, T0 + 59.5))
    loads = job.checkpoint("load", "ckpt/59", 59, T0 + 80)
    groups += [loads, loads]
    groups += [job.step(s, T0 + 21 + s, over={r: {"env_fingerprint": "env-0002"}
                                              for r in range(8)}) for s in range(60, 120)]
    found = feed(stage, groups)
    assert [(f.check, f.step, f.ranks) for f in found] == [("code_changed", 60, [])]
    assert stage.stats()["restarts"] == 1


def test_a_record_for_a_closed_step_is_counted_late_and_ignored():
    job, stage = FakeJob(8, seed=4), ConsistencyStage()
    feed(stage, [job.step(s) for s in range(1, 20)])
    duplicate = job.step(5, over={1: {"param_checksum": "late-and-wrong"}})
    assert stage.observe(duplicate) == []
    assert stage.stats()["late_records"] == 8


def test_bare_step_records_are_assembled_too():
    job, stage = FakeJob(8, noise=False), ConsistencyStage()
    recs = [[r] for s in range(1, 20) for b in job.step(s, over={6: {"lr": 1.0}})
            for r in b.steps]
    found = feed(stage, recs)
    assert checks(found) == ["lr_mismatch"] and found[0].cluster == "unknown"


def test_open_steps_per_job_are_bounded():
    job = FakeJob(8, seed=5)
    stage = ConsistencyStage(ConsistencyConfig(max_open_steps=5))
    for s in range(1, 200):  # ten steps a second and a rank missing: ~30 steps wait
        stage.observe(job.step(s, T0 + s / 10, skip={7}))
        assert stage.stats()["open_steps"] <= 6
    assert stage.stats()["forced_closes"] > 0


def test_jobs_are_bounded_and_silent_ones_expire_in_wall_clock_time():
    wall = Clock()
    stage = ConsistencyStage(ConsistencyConfig(max_jobs=2, job_idle_s=100), clock=wall)
    for name in ("a", "b", "c"):
        stage.observe(FakeJob(4, job_id=name).step(1))
        wall.advance(1)
    assert sorted(stage.jobs) == ["b", "c"] and stage.evicted_jobs == 1
    live = FakeJob(4, job_id="c")
    for s in range(2, 300):  # c's event time races ahead: b stays, it is not silent yet
        stage.observe(live.step(s))
    assert sorted(stage.jobs) == ["b", "c"] and stage.expired_jobs == 0
    for s in range(300, 450):  # 150 s of wall clock: b is silent for longer than 100 s
        wall.advance(1)
        stage.observe(live.step(s))
    assert sorted(stage.jobs) == ["c"] and stage.expired_jobs == 1


@pytest.mark.parametrize("bad", [
    {"wait_s": 0}, {"loss_cusum_h": 2.0}, {"straggler_cusum_k": 0.0},
    {"idle_pct": 70.0}, {"missing_quorum": 1.5}, {"repeat_s": -1.0}, {"clear_steps": 0},
    {"grad_n": 65, "grad_k": 3}, {"wait_s": float("nan")},
])
def test_bad_thresholds_are_refused_at_construction(bad):
    with pytest.raises(ConfigError):
        ConsistencyConfig(**bad)


def test_findings_survive_the_strict_wire_decoder():
    found = feed(ConsistencyStage(), [[b] for b in _faulty_run(seed=2)])
    decoder = RecordDecoder(Finding)
    assert found and [decoder.decode(encode(f)) for f in found] == found
