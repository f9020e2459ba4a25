"""ColumnRows: Arrow columns that read as row dicts, and their one-pass time check."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from trainguard.pipeline.sinks.column_rows import ColumnRows, column_rows
from trainguard.pipeline.sinks.times import STORE_TS_MAX, TIME_COLUMNS

SCHEMA = pa.schema([("entity", pa.string()), ("ts", pa.float64()), ("n", pa.uint64())])
ROWS = [{"entity": f"e{i}", "ts": 1.7e9 + i, "n": i} for i in range(5)]


def _rows(ts: list[float] | None = None) -> ColumnRows:
    return column_rows({"entity": [r["entity"] for r in ROWS],
                        "ts": ts if ts is not None else [r["ts"] for r in ROWS],
                        "n": [r["n"] for r in ROWS]}, SCHEMA)


def test_they_read_as_the_row_dicts_they_hold():
    rows = _rows()
    assert len(rows) == 5 and list(rows) == ROWS and rows == ROWS and rows != ROWS[:4]
    assert rows[0] == ROWS[0] and rows[-1] == ROWS[4]
    with pytest.raises(IndexError):
        rows[5]


def test_a_slice_is_column_rows_of_those_rows():
    part = _rows()[1:3]
    assert isinstance(part, ColumnRows) and part.table.num_rows == 2
    assert list(part) == ROWS[1:3] and list(_rows()[4:9]) == ROWS[4:]
    with pytest.raises(ValueError, match="step 1"):
        _rows()[::2]


@pytest.mark.parametrize(("bad", "why"), [
    (math.nan, "NaN"), (STORE_TS_MAX + 1, "past the store's range"), (-3e9, "before it"),
    (None, "null")])
def test_one_bad_time_sends_the_sink_to_its_per_row_check(bad, why):
    assert _rows().times_storable(TIME_COLUMNS)
    ts = [r["ts"] for r in ROWS]
    ts[3] = bad
    assert not _rows(ts).times_storable(TIME_COLUMNS), why


def test_columns_that_are_not_there_or_not_times_are_not_checked():
    assert _rows().times_storable(("nope",))
    empty = column_rows({"entity": [], "ts": [], "n": []}, SCHEMA)
    assert len(empty) == 0 and empty.times_storable(TIME_COLUMNS) and empty == []
