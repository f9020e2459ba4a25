"""The baselines' column gather (pipeline/detect/points.py)."""

import math

import numpy as np

from trainguard.pipeline.detect.points import columns
from trainguard.schemas.records import StepRecord

FIELDS = ["loss", "grad_norm", "step_time_s"]


def _step(rank: int, **values: float | None) -> StepRecord:
    return StepRecord(job_id="j", rank=rank, world_size=4, node="n", step=1, ts=1.0, **values)


def test_every_field_of_every_item_in_one_column_per_field():
    items = [_step(r, loss=2.0 + r, grad_norm=float(r), step_time_s=0.5) for r in range(4)]
    got = columns(FIELDS, items)
    assert [c.tolist() for c in got] == [[2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 3.0],
                                         [0.5] * 4]
    assert all(c.flags.c_contiguous and c.dtype == np.float64 for c in got)


def test_a_value_not_reported_is_nan_in_its_column_only():
    items = [_step(0, loss=2.0, grad_norm=1.0, step_time_s=0.5),
             _step(1, loss=2.1, step_time_s=0.6)]  # no grad norm
    loss, grad, step_time = columns(FIELDS, items)
    assert loss.tolist() == [2.0, 2.1] and step_time.tolist() == [0.5, 0.6]
    assert grad[0] == 1.0 and math.isnan(grad[1])


def test_no_items_give_empty_columns_and_one_field_its_column():
    assert [len(c) for c in columns(FIELDS, [])] == [0, 0, 0]
    assert [c.tolist() for c in columns(["loss"], [_step(0, loss=3.0)])] == [[3.0]]
