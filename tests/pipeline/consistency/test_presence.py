from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed, first
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage


def test_a_rank_that_stops_reporting_is_missing_with_its_last_node():
    job = FakeJob(16, seed=1)
    found = feed(ConsistencyStage(), [job.step(s, skip={9} if s >= 20 else ()) for s in
                                      range(1, 60)])
    assert checks(found) == ["rank_missing"]
    f = first(found)[0]
    assert (f.ranks, f.nodes, f.step, f.category) == ([9], ["node-01"], 20, "availability")
    assert "rank 9 (last seen on node-01)" in f.summary and "15 of the 16" in f.summary


def test_a_missing_rank_is_decided_within_the_wait_of_event_time():
    job, stage = FakeJob(16, seed=2), ConsistencyStage(ConsistencyConfig(wait_s=3.0))
    decided_at = None
    for s in range(1, 40):
        if stage.observe(job.step(s, skip={4} if s >= 10 else ())) and decided_at is None:
            decided_at = stage.watermark
    assert decided_at is not None and decided_at <= T0 + 10 + 3.0


def test_a_findings_ts_is_when_it_was_decided_not_when_its_step_began():
    # Time to detect counts the bounded wait: ts is the job's event time at the decision.
    job, stage = FakeJob(16, seed=2), ConsistencyStage(ConsistencyConfig(wait_s=3.0))
    found = []
    for s in range(1, 40):
        found += stage.observe(job.step(s, skip={4} if s >= 10 else ()))
    (f,) = first(found)
    assert f.first_seen < T0 + 10 + 1 and f.ts >= f.first_seen + 3.0


def test_a_rank_that_comes_back_and_goes_again_is_one_finding_per_absence():
    job = FakeJob(8, seed=3)
    gone = set(range(10, 20)) | set(range(60, 70))
    found = feed(ConsistencyStage(), [job.step(s, skip={2} if s in gone else ()) for s in
                                      range(1, 90)])
    assert [(f.check, f.step) for f in first(found)] == [("rank_missing", 10),
                                                        ("rank_missing", 60)]


def test_every_rank_stopping_at_once_raises_no_rank_missing():
    # A checkpoint save, an eval or a stop: no step closes with ranks missing.
    job, stage = FakeJob(16, seed=4), ConsistencyStage()
    found = feed(stage, [job.step(s) for s in range(1, 30)])
    found += stage.flush(T0 + 500)
    found += feed(stage, [job.step(s, T0 + 400 + s) for s in range(30, 60)])
    assert found == []


def test_a_partial_last_step_before_a_stop_blames_nobody():
    job, stage = FakeJob(16, seed=5), ConsistencyStage()
    found = feed(stage, [job.step(s) for s in range(1, 30)] + [job.step(30, skip=range(8))])
    found += stage.flush(T0 + 1000)
    assert found == []


def test_a_planned_resize_raises_no_rank_missing():
    job = FakeJob(16, seed=6)
    batches = [job.step(s) for s in range(1, 50)]
    batches += [job.step(s, ranks=range(8), world_size=8) for s in range(50, 120)]
    assert feed(ConsistencyStage(), batches) == []


def test_a_rank_falling_behind_the_job_is_skewed_not_missing():
    # From t = 20 rank 3 does a step every 1.25 s while its peers do one a second: it keeps
    # reporting, ever later; its records arrive after their steps closed without it.
    job = FakeJob(16, seed=7)
    batches, k = [], 20
    for t in range(1, 60):
        batch = job.step(t, skip={3} if t >= 20 else ())
        while T0 + 20 + (k - 20) * 1.25 < T0 + t + 1:
            batch += job.step(k, T0 + 20 + (k - 20) * 1.25, ranks=[3])
            k += 1
        batches.append(batch)
    stage = ConsistencyStage()
    found = feed(stage, batches)
    assert checks(found) == ["step_skew"]
    f = first(found)[0]
    assert (f.ranks, f.nodes) == ([3], ["node-00"])
    assert f.expected - f.observed == 5  # flagged as soon as it is 5 steps behind
    assert stage.stats()["late_records"] > 0


def test_a_rank_trailing_within_the_wait_is_skewed_in_event_time():
    # Ten steps a second; rank 5's records come 0.6 s (six steps) after its peers'.
    job = FakeJob(16, seed=8)
    batches = [b for s in range(1, 200)
               for b in job.step(s, T0 + s / 10, delay={5: 0.6} if s >= 100 else None)]
    found = feed(ConsistencyStage(), [[b] for b in sorted(batches, key=lambda b: b.ts)])
    assert checks(found) == ["step_skew"]
    assert first(found)[0].ranks == [5]


def test_ranks_in_step_raise_no_skew_or_missing():
    job = FakeJob(16, seed=9)
    batches = [job.step(s, T0 + s / 10, delay={r: 0.001 * r for r in range(16)})
               for s in range(1, 200)]
    assert feed(ConsistencyStage(), batches) == []


def test_a_job_whose_gpus_report_but_steps_stop_is_stalled_once():
    job, stage = FakeJob(16, seed=10), ConsistencyStage()
    groups = [job.step(s) + job.samples(T0 + s + 0.5) for s in range(1, 30)]
    groups += [job.samples(T0 + t + 0.5) for t in range(30, 150)]
    found = feed(stage, groups)
    assert [(f.check, f.category, f.step) for f in first(found)] == [
        ("job_stalled", "info", 29)]
    assert len(found) == 2  # re-emitted once after repeat_s (60 s), same id
    assert found[1].finding_id == found[0].finding_id and found[1].last_seen > found[0].last_seen


def test_a_checkpoint_pause_is_not_a_stall():
    job = FakeJob(16, seed=11)
    groups = [job.step(s) + job.samples(T0 + s + 0.5) for s in range(1, 30)]
    groups += [job.samples(T0 + t + 0.5, util=3.0) for t in range(30, 40)]
    groups += [job.step(s, T0 + s + 10) + job.samples(T0 + s + 10.5) for s in range(30, 60)]
    assert feed(ConsistencyStage(), groups) == []
