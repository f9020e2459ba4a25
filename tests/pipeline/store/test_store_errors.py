"""Store error classification: the data's fault (set the rows aside) or the store's (wait)."""

import pytest

from trainguard.errors import StoreError
from trainguard.pipeline.store.errors import StoreDataError, error_code, is_data_error


@pytest.mark.parametrize("message", [
    "Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'zz'",
    "Code: 72. DB::Exception: Cannot parse number: (at row 1)",
    "Code: 321. DB::Exception: Value 300 is out of range of UInt8",
    "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100).",
    "Code: 1001. DB::Exception: std::out_of_range: stoll",
])
def test_an_error_that_blames_the_rows_is_a_data_error(message):
    assert is_data_error(message)


@pytest.mark.parametrize("message", [
    "Code: 252. DB::Exception: Too many parts (3001). Merges are processing significantly "
    "slower than inserts",
    "Code: 241. DB::Exception: Memory limit (total) exceeded",
    "Code: 60. DB::Exception: Table t_1.steps does not exist. (UNKNOWN_TABLE)",
    "Code: 1001. DB::Exception: std::bad_alloc",
    "Code: 999. DB::Exception: something new",
    "cannot reach ClickHouse at localhost:8123: connection refused",
])
def test_an_error_about_the_stores_state_is_not_a_data_error(message):
    assert not is_data_error(message)


def test_the_error_code_is_read_from_the_engine_message():
    assert error_code("Code: 27. DB::Exception: x") == 27
    assert error_code("no code here") is None


def test_a_data_error_is_still_a_store_error_for_callers_that_only_know_that():
    assert issubclass(StoreDataError, StoreError)
