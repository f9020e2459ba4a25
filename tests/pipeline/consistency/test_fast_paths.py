"""The stage's shortcuts for the usual step give what the general path gives, bit for bit.

Medians by a partial sort, rows nobody reported, the CUSUM update without masks, per-rank
state read through a slice when rank slots run in order, one sort for a mismatch's median
and mode: each is compared here with the general computation on the same input.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tests.pipeline.consistency.helpers import T0, FakeJob, feed
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.consistency.columns import step_columns
from trainguard.pipeline.consistency.history import job_median
from trainguard.pipeline.consistency.robust import CalibratedCusum, row_medians
from trainguard.schemas.records import StepBatch


def _sorted_medians(values: np.ndarray, min_peers: int) -> np.ndarray:
    """Row medians the long way: a full sort, finite values counted (the general path)."""
    rows, _ = values.shape
    counts = np.isfinite(values).sum(axis=1)
    ordered = np.sort(values, axis=1)
    at = np.arange(rows)
    med = 0.5 * (ordered[at, np.maximum((counts - 1) // 2, 0)] + ordered[at, counts // 2])
    med[counts < min_peers] = math.nan
    return med


@pytest.mark.parametrize("shape", ["full", "empty_row", "holes", "all_nan", "inf"])
def test_row_medians_match_a_full_sort_whatever_is_missing(shape):
    rng = np.random.default_rng(7)
    for n in range(1, 40):
        values = rng.normal(size=(3, n))
        if shape == "empty_row":
            values[1] = math.nan
        elif shape == "holes":
            values[rng.random((3, n)) < 0.3] = math.nan
        elif shape == "all_nan":
            values[:] = math.nan
        elif shape == "inf":
            values[0, 0], values[2] = math.inf, math.nan
        for min_peers in (1, 2, 3):
            assert np.array_equal(row_medians(values, min_peers=min_peers),
                                  _sorted_medians(values, min_peers), equal_nan=True)


def test_job_median_is_numpys_median_of_the_finite_values():
    rng = np.random.default_rng(3)
    for n in range(0, 30):
        values = rng.normal(size=n)
        values[rng.random(n) < 0.2] = math.nan
        finite = values[np.isfinite(values)]
        expected = float(np.median(finite)) if len(finite) else math.nan
        assert job_median(values) == expected or (math.isnan(expected)
                                                  and math.isnan(job_median(values)))


def _cusum() -> CalibratedCusum:
    return CalibratedCusum(2, clip=4.0, k=(0.5, 0.5), cap=40.0, warmup=3, null_span=20,
                           effect_span=10, sd_floor=0.1)


def test_cusum_through_a_slice_equals_cusum_through_indices():
    rng = np.random.default_rng(11)
    by_slice, by_index = _cusum(), _cusum()
    for c in (by_slice, by_index):
        c.grow(16)
    for step in range(30):
        z = rng.normal(size=(2, 8))
        effect = 0.01 * rng.normal(size=(2, 8))
        ok = np.ones((2, 8), dtype=np.bool_)
        if step % 4 == 3:  # some steps with a rank or a whole metric missing
            ok[1] = False
            ok[0, step % 8] = False
        u1 = by_slice.update(slice(4, 12), z, effect, ok)
        u2 = by_index.update(np.arange(4, 12), z, effect, ok)
        assert np.array_equal(u1, u2, equal_nan=True)
    for name in ("seen", "mean", "square", "up", "down", "effect"):
        assert np.array_equal(getattr(by_slice, name), getattr(by_index, name))


def test_a_field_nobody_reports_is_nan_and_partial_ones_are_nan_where_missing():
    job = FakeJob(8, gpus=8, noise=False)
    recs = [job.record(r, 1, T0, compute_time_s=None,
                       local_grad_norm=None if r % 2 else 1.5) for r in range(8)]
    cols = step_columns(recs)
    assert np.isnan(cols.compute_time_s).all()
    assert np.isnan(cols.local_grad_norm[1::2]).all()
    assert (cols.local_grad_norm[0::2] == 1.5).all()
    assert (cols.loss == 2.0).all() and (cols.lr == 3e-4).all()
    assert not cols.any_nonfinite and not cols.grad_nonfinite.any()


def test_a_rank_naming_its_loss_non_finite_is_flagged_among_many_missing_values():
    job = FakeJob(64, gpus=8, noise=False)
    recs = [job.record(r, 1, T0, local_grad_norm=None, loss=None if r == 5 else 2.0,
                       nonfinite=["loss"] if r == 5 else []) for r in range(64)]
    cols = step_columns(recs)
    assert cols.any_nonfinite
    assert np.flatnonzero(cols.loss_nonfinite).tolist() == [5]
    assert not cols.grad_nonfinite.any()


def _shuffled(batches: list[list[StepBatch]], seed: int) -> list[list[StepBatch]]:
    rng = random.Random(seed)
    out = []
    for group in batches:
        group = list(group)
        rng.shuffle(group)
        out.append(group)
    return out


def _faulty_run(seed: int | None) -> list[tuple[str, tuple[int, ...], int | None, str]]:
    """A job with a slow rank, a loss outlier and a split grad norm, arrival order varied."""
    job = FakeJob(16, gpus=4, seed=1)
    steps = []
    for s in range(1, 80):
        over = {3: {"compute_time_s": 1.6}, 9: {"loss": 2.6}}
        if s > 40:
            over[12] = {"grad_norm": 1.4}
        steps.append(job.step(s, over=over))
    if seed is not None:
        steps = _shuffled(steps, seed)
    found = feed(ConsistencyStage(), steps)
    return [(f.check, tuple(f.ranks), f.step, f.finding_id) for f in found]


def test_findings_do_not_depend_on_the_order_ranks_first_reported_in():
    # In order, the peer checks read rank slots through a slice; shuffled, by index.
    plain = _faulty_run(None)
    assert {c for c, *_ in plain} >= {"straggler", "loss_outlier", "grad_norm_mismatch"}
    for seed in (1, 2):
        assert _faulty_run(seed) == plain
