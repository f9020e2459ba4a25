"""job_shift through the stage: the job against its own past, re-baselined where it should be."""

from collections.abc import Callable

import pytest

from tests.pipeline.consistency.helpers import T0, FakeJob, feed, first
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.schemas.records import StepBatch

AT = 300  # the step a change starts


def make_step(job: FakeJob, s: int, ts: float, *, loss: float = 2.0, time: float = 1.0,
              lr: float = 3e-4, tokens: float = 65536.0, world: int | None = None,
              data_epoch: int | None = None, one: dict | None = None,
              step_time: float | None = None) -> list[StepBatch]:
    """Step ``s`` of every rank (of ``world``): loss with 3 % micro-batch noise.

    Ranks compute ``time - 0.1`` s (2 % noise); the step takes ``step_time`` (``time``).
    """
    step_time = step_time or time
    ranks = range(world or job.ranks)
    g = job.rng.gauss
    by_node: dict[str, list] = {}
    for r in ranks:
        fields = dict(loss=loss * (1 + 0.03 * g(0, 1)), lr=lr, step_time_s=step_time,
                      compute_time_s=(time - 0.1) * (1 + 0.02 * g(0, 1)),
                      tokens_per_s=tokens / step_time, data_epoch=data_epoch)
        if one and r == 0:
            fields.update(one)
        rec = job.record(r, s, ts, world_size=world, **fields)
        by_node.setdefault(rec.node, []).append(rec)
    return [job._batch(node, recs) for node, recs in by_node.items()]


def drive(steps: int, knobs: Callable[[int], dict], *, config: ConsistencyConfig | None = None,
          gap_every: int = 0, seed: int = 0, restart_at: int = 0):
    """Run ``steps`` steps (one per second, pauses of 10 s every ``gap_every``)."""
    job = FakeJob(16, 4, seed=seed)
    stage = ConsistencyStage(config, clock=lambda: T0)
    batches, ts, s = [], T0, 0
    for i in range(1, steps + 1):
        s = s + 1 if i != restart_at else s - 150
        ts += 10.0 if gap_every and i % gap_every == 0 else 1.0
        batches.append(make_step(job, s, ts, **knobs(i)))
    found = feed(stage, batches)
    return [f for f in first(found) if f.check == "job_shift"]


def loss_curve(i: int) -> float:
    return 2.0 + 6.0 * 2.718281828 ** (-i / 2000)


def test_a_whole_job_loss_rise_is_a_job_shift_naming_the_job():
    found = drive(AT + 150, lambda i: {"loss": loss_curve(i) * (1.05 if i >= AT else 1.0)})
    assert len(found) == 1
    f = found[0]
    assert f.ranks == [] and f.nodes == [] and f.category == "integrity"
    assert f.evidence["metric"] == "loss" and f.evidence["direction"] == "up"
    assert AT <= f.step < AT + 120 and f.evidence["change_pct"] == pytest.approx(5, abs=2)
    assert "every rank moved together" in f.summary


def test_a_clean_falling_loss_with_checkpoint_pauses_fires_nothing():
    assert drive(2000, lambda i: {"loss": loss_curve(i)}, gap_every=60) == []


def test_the_first_slow_steps_after_a_pause_are_left_out():
    slow = {0, 1}  # the two steps after each pause take 3x
    assert drive(1500, lambda i: {"time": 3.0 if i % 50 in slow else 1.0},
                 gap_every=50) == []


def test_a_job_wide_slowdown_is_an_availability_shift():
    found = drive(AT + 100, lambda i: {"time": 1.15 if i >= AT else 1.0})
    assert {f.evidence["metric"] for f in found} == {"step_time", "tokens_per_s"}
    assert all(f.category == "availability" and f.ranks == [] for f in found)
    assert all(AT <= f.step < AT + 30 for f in found)


def test_one_slow_rank_is_not_a_job_wide_shift():
    # The step waits for the straggler; the median rank's pace is unchanged.
    assert drive(AT + 200, lambda i: {"step_time": 1.5, "one": {"compute_time_s": 1.43}}
                 if i >= AT else {}) == []


def test_one_ranks_corrupted_gradient_is_not_a_job_wide_shift():
    assert drive(AT + 200, lambda i: {"one": {"local_grad_norm": 5.0}} if i >= AT else {}) == []


def test_a_new_data_epoch_rebaselines():
    knobs = lambda i: {"loss": 2.0 * (0.85 if i >= AT else 1.0),  # noqa: E731
                       "data_epoch": int(i >= AT)}
    assert drive(AT + 200, knobs) == []
    assert [f.evidence["metric"] for f in drive(AT + 200, lambda i: {
        "loss": 2.0 * (0.85 if i >= AT else 1.0), "data_epoch": 0})] == ["loss"]


def test_a_restart_rebaselines():
    assert drive(AT + 250, lambda i: {"loss": 2.0 * (1.1 if i >= AT else 1.0)},
                 restart_at=AT) == []


def test_a_smaller_world_rebaselines():
    knobs = lambda i: {"world": 12, "tokens": 49152.0} if i >= AT else {}  # noqa: E731
    assert drive(AT + 250, knobs) == []


def test_an_lr_raised_everywhere_is_found_at_once_and_a_drop_is_info():
    up = drive(AT + 50, lambda i: {"lr": 3e-4 * (3.0 if i >= AT else 1.0)})
    assert [(f.evidence["metric"], f.category, f.step) for f in up] == [
        ("lr", "integrity", AT)]
    assert "x3" in up[0].summary
    down = drive(AT + 50, lambda i: {"lr": 3e-4 * (0.1 if i >= AT else 1.0)})
    assert [(f.evidence["metric"], f.category) for f in down] == [("lr", "info")]


def test_a_shift_stays_reported_for_the_hold_then_clears():
    config = ConsistencyConfig(job_shift_hold_steps=50)
    job = FakeJob(16, 4, seed=0)
    stage = ConsistencyStage(config, clock=lambda: T0)
    out = []
    for i in range(1, AT + 150):
        out += stage.observe(make_step(job, i, T0 + i, lr=3e-4 * (3.0 if i >= AT else 1.0)))
    shifts = [f for f in out if f.check == "job_shift"]
    cleared = [f for f in shifts if f.cleared_at is not None]
    assert len({f.finding_id for f in shifts}) == 1
    # Reported for 50 steps, then 20 steps without it clear the finding.
    assert len(cleared) == 1 and cleared[0].cleared_at == pytest.approx(T0 + AT + 70, abs=2)


def test_too_few_ranks_give_no_verdict():
    config = ConsistencyConfig()
    job = FakeJob(16, 4, seed=0)
    stage = ConsistencyStage(config, clock=lambda: T0)
    for i in range(1, 400):  # 4 of 16 ranks: below the quorum, every step
        batches = make_step(job, i, T0 + i, loss=2.0 * (2.0 if i >= AT else 1.0))
        stage.observe([b for b in batches if b.node == "node-00"])
    stage.flush(T0 + 500)
    assert stage.jobs["job-a"].trajectory.detectors[0].ready is False
