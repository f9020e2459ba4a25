"""Per-job event time: one job's records never move another job's time."""

from tests.pipeline.consistency.helpers import T0, FakeJob
from tests.pipeline.fakes import Clock
from trainguard.pipeline.consistency import ConsistencyStage


def _waiting_job(stage: ConsistencyStage) -> FakeJob:
    """Job a: a few steps, the last one short a rank, so it waits (wait_s = 3)."""
    a = FakeJob(8, job_id="a", seed=1)
    for s in range(1, 5):
        stage.observe(a.step(s, skip={3} if s == 4 else ()))
    assert stage.jobs["a"].asm.open_steps == 1
    return a


def test_a_far_future_record_of_another_job_closes_none_of_this_jobs_steps():
    wall = Clock()
    stage = ConsistencyStage(clock=wall)
    _waiting_job(stage)
    before = stage.job_now("a")
    stage.observe(FakeJob(8, job_id="b").step(1, T0 + 1e6))
    stage.flush()
    assert stage.jobs["a"].asm.open_steps == 1
    assert stage.job_now("a") == before == stage.jobs["a"].asm.watermark
    assert stage.job_now("b") == T0 + 1e6


def test_a_silent_jobs_steps_close_on_its_own_time_moved_on_by_the_wall_clock():
    wall = Clock()
    stage = ConsistencyStage(clock=wall)
    _waiting_job(stage)
    wall.advance(2.0)
    assert stage.flush() == [] and stage.jobs["a"].asm.open_steps == 1
    wall.advance(1.5)  # past wait_s after the step's first record
    found = stage.flush()
    assert stage.jobs["a"].asm.open_steps == 0
    assert all(f.job_id == "a" for f in found)


def test_the_stage_watermark_is_only_the_newest_of_the_jobs():
    stage = ConsistencyStage(clock=Clock())
    stage.observe(FakeJob(8, job_id="a").step(1, T0))
    stage.observe(FakeJob(8, job_id="b").step(1, T0 + 50))
    assert stage.watermark == T0 + 50
    assert stage.job_now("a") == T0 and stage.job_now("b") == T0 + 50
    assert stage.job_watermark("a") == T0 and stage.job_watermark("zz") == float("-inf")
