import pytest

from trainguard.errors import StoreError
from trainguard.pipeline.sinks.store_sink import StoreSink


class FlakyStore:
    """Fails the first ``failures`` inserts: exercises the retry loop without a real outage.
    The real-store path is covered by the integration tests."""

    def __init__(self, failures):
        self.failures = failures
        self.inserted = []

    def insert_rows(self, table, rows):
        if self.failures:
            self.failures -= 1
            raise StoreError("store down")
        self.inserted.append((table, list(rows)))


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s

    def __call__(self):
        return self.now


def test_write_retries_with_growing_backoff_until_the_store_is_back():
    store, clock = FlakyStore(failures=4), FakeClock()
    sink = StoreSink(store, sleep=clock.sleep, clock=clock, max_backoff_s=1.0)
    assert sink.write({"a": [{"x": 1}], "b": [{"y": 2}, {"y": 3}], "empty": []}) == 3
    assert clock.sleeps == [0.2, 0.4, 0.8, 1.0]
    assert [t for t, _ in store.inserted] == ["a", "b"]
    assert sink.counters.retries == 4 and sink.counters.rows == 3 and sink.counters.batches == 1


def test_write_gives_up_after_the_retry_budget_with_a_clear_error():
    clock = FakeClock()
    sink = StoreSink(FlakyStore(failures=10**6), sleep=clock.sleep, clock=clock, retry_for_s=30)
    with pytest.raises(StoreError, match="giving up on a store write after 3[0-9]s"):
        sink.write({"a": [{"x": 1}]})
