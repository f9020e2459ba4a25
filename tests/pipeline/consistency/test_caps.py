import tracemalloc

from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage

BIG = 1 << 20


def _allocated_by(fn):
    """Peak bytes traced while ``fn`` runs (allocations made before it excluded)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_one_record_claiming_rank_two_to_the_twenty_costs_little_memory():
    stage = ConsistencyStage()

    def one_record(job_id):
        stage.observe(FakeJob(1, job_id=job_id).step(1, ranks=[BIG - 1], world_size=BIG))
        stage.flush(T0 + 100)  # its step closes: every per-step check runs on it

    # The first one pays the lazy imports and caches; the next shows the cost per record.
    feed(stage, [FakeJob(8, job_id="warm-up").step(s) for s in range(1, 4)])
    one_record("forged-0")
    assert _allocated_by(lambda: one_record("forged-1")) < 1_000_000
    assert stage.stats()["steps_closed"] == 5


def test_per_rank_state_grows_with_the_ranks_that_report_not_their_numbers():
    stage = ConsistencyStage()
    job = FakeJob(8, job_id="sparse")
    far = [0, 1, 2, 3, BIG - 4, BIG - 3, BIG - 2, BIG - 1]
    feed(stage, [job.step(s, ranks=far, world_size=BIG) for s in range(1, 6)])
    state = stage.jobs["sparse"]
    assert sorted(state.asm.slot_of) == far and len(state.asm.last_ts) == 8
    assert state.peers.capacity <= 16
    assert state.asm.ranks_on(job.node(BIG - 1)) == (BIG - 4, BIG - 3, BIG - 2, BIG - 1)
    assert state.asm.ranks_on(job.node(0), 2) == (2,)
    assert stage.stats()["steps_closed"] == 5


def test_rank_missing_and_step_skew_still_name_sparse_ranks():
    job = FakeJob(16, seed=2)
    stage = ConsistencyStage()
    found = feed(stage, [job.step(s, skip={7} if s >= 10 else ()) for s in range(1, 40)])
    assert {tuple(f.ranks) for f in found if f.check == "rank_missing"} == {(7,)}


def test_a_record_past_the_configured_world_size_is_counted_as_malformed():
    stage = ConsistencyStage(ConsistencyConfig(max_world_size=16))
    job = FakeJob(4, job_id="j")
    feed(stage, [job.step(1, world_size=17), job.step(2)])
    assert stage.stats()["malformed_records"] == 4
    assert stage.stats()["steps_closed"] == 1


def test_past_max_jobs_the_least_recently_seen_job_is_evicted_and_counted():
    stage = ConsistencyStage(ConsistencyConfig(max_jobs=2))
    a, b, c = (FakeJob(4, job_id=name) for name in ("job-a", "job-b", "job-c"))
    stage.observe(a.step(1))
    stage.observe(b.step(1, ts=T0 + 1.0))
    stage.observe(a.step(2))  # a is now the more recently seen, though b's time is later
    stage.observe(c.step(1, ts=T0 + 3.0))
    assert sorted(stage.jobs) == ["job-a", "job-c"]
    assert stage.stats()["evicted_jobs"] == 1


def test_eviction_spares_the_jobs_of_the_batch_at_hand():
    stage = ConsistencyStage(ConsistencyConfig(max_jobs=2))
    stage.observe(FakeJob(4, job_id="old").step(1))
    batch = [b for name in ("new-1", "new-2") for b in FakeJob(4, job_id=name).step(1)]
    stage.observe(batch)
    assert sorted(stage.jobs) == ["new-1", "new-2"] and stage.evicted_jobs == 1


def test_a_flood_of_forged_jobs_leaves_a_real_jobs_findings_intact():
    stage = ConsistencyStage(ConsistencyConfig(max_jobs=8))
    real = FakeJob(8, job_id="real")
    found = []
    for s in range(1, 60):
        over = {3: {"param_checksum": f"bad-{s}"}} if s >= 20 else {}
        found += stage.observe(real.step(s, over=over))
        found += stage.observe(FakeJob(2, job_id=f"forged-{s}").step(1, ts=T0 + s))
    assert "param_divergence" in checks(found)
    assert "real" in stage.jobs and len(stage.jobs) == 8
    assert stage.evicted_jobs == 59 + 1 - 8
