import threading

import pytest

from trainguard.errors import StoreError
from trainguard.pipeline.dead_letters import RawMessage
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store.errors import StoreDataError


class FakeStore:
    """Fails the first ``failures`` inserts as if down; refuses any block holding a poisoned
    row or line as the engine does (the whole block). The real engine: test_store_sink_chdb."""

    def __init__(self, failures=0):
        self.failures = failures
        self.inserted = []
        self.calls = 0

    def _insert(self, table, items, poisoned):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise StoreError("store down")
        if any(poisoned(i) for i in items):
            raise StoreDataError("Code: 27. DB::Exception: Cannot parse input")
        self.inserted.append((table, list(items)))

    def insert_rows(self, table, rows):
        self._insert(table, rows, lambda r: r.get("x") == "poison")

    def insert_json_lines(self, table, lines):
        self._insert(table, lines, lambda b: b"poison" in b)

    def stored(self, table):
        return [i for t, items in self.inserted if t == table for i in items]


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s

    def __call__(self):
        return self.now


def _sink(store, clock=None, **kw):
    clock = clock or FakeClock()
    return StoreSink(store, sleep=clock.sleep, clock=clock, wall=lambda: 1.7e9, **kw)


def test_write_retries_with_growing_backoff_until_the_store_is_back():
    store, clock = FakeStore(failures=4), FakeClock()
    sink = _sink(store, clock, max_backoff_s=1.0)
    result = sink.write({"a": [{"x": 1}], "b": [{"y": 2}, {"y": 3}], "empty": []})
    assert result.written == 3 and result.dead == []
    assert clock.sleeps == [0.2, 0.4, 0.8, 1.0]
    assert [t for t, _ in store.inserted] == ["a", "b"]
    assert sink.counters.retries == 4 and sink.counters.rows == 3 and sink.counters.batches == 1


def test_a_store_down_past_the_budget_is_declared_down_and_the_write_still_lands():
    store, clock = FakeStore(failures=40), FakeClock()
    sink = _sink(store, clock, retry_for_s=30, max_backoff_s=10.0)
    seen_down = []
    real_sleep = clock.sleep

    def sleep(s):
        seen_down.append(sink.counters.store_down)
        real_sleep(s)

    sink._sleep = sleep
    assert sink.write({"a": [{"x": 1}]}).written == 1  # no exception: the worker stays up
    assert clock.now > 300 and True in seen_down
    assert sink.counters.outages == 1 and sink.counters.store_down is False  # back now


def test_a_closed_sink_gives_up_a_waiting_write_with_a_clear_error():
    stop = threading.Event()
    clock = FakeClock()

    def sleep(s):
        clock.sleep(s)
        if len(clock.sleeps) == 3:
            stop.set()  # what StoreSink.close does from the shutting-down worker

    sink = StoreSink(FakeStore(failures=10**6), sleep=sleep, clock=clock, stop=stop)
    with pytest.raises(StoreError, match="giving up on a store write after 1s .* closing"):
        sink.write({"a": [{"x": 1}]})


def test_a_poisoned_row_is_bisected_out_and_the_others_land():
    store = FakeStore()
    sink = _sink(store)
    rows = [{"x": i} for i in range(16)]
    rows[11] = {"x": "poison"}
    result = sink.write({"t": rows})
    assert result.written == 15
    assert [r["x"] for r in store.stored("t")] == [i for i in range(16) if i != 11]
    [dead] = result.dead
    assert dead.reason == "store_rejected" and "Cannot parse input" in dead.message
    assert store.stored("dead_letters")[0]["reason"] == "store_rejected"
    assert sink.counters.rejected == {"store_rejected": 1} and sink.counters.rows == 15


def test_a_refused_line_costs_the_message_it_came_from():
    store = FakeStore()
    sink = _sink(store)
    source = RawMessage(topic="tg.steps", partition=2, offset=77, key=b"k", value=b"the bytes")
    lines = [b'{"n":0}', b'{"n":"poison"}', b'{"n":2}']
    result = sink.write({}, {"step_batches_in": lines},
                        lambda table, i: source if (table, i) == ("step_batches_in", 1) else None)
    assert store.stored("step_batches_in") == [lines[0], lines[2]]
    [dead] = result.dead
    assert dead.source is source
    [row] = store.stored("dead_letters")
    assert (row["topic"], row["partition"], row["offset"]) == ("tg.steps", 2, 77)
    assert row["payload_head"] == "the bytes" and row["reason"] == "store_rejected"


def test_a_refused_row_without_a_message_is_dead_lettered_with_its_own_bytes():
    store = FakeStore()
    result = _sink(store).write({"findings": [{"x": "poison", "id": "f1"}, {"x": 1}]})
    [dead] = result.dead
    assert dead.source.topic == "store.findings" and dead.source.partition == -1
    assert b'"f1"' in dead.source.value and dead.source.offset >= 0


def test_rows_with_times_out_of_the_store_range_are_clock_dead_letters_never_inserted():
    store = FakeStore()
    sink = _sink(store)
    rows = [{"x": 0, "ts": 1.7e9}, {"x": 1, "ts": 1e308}, {"x": 2, "ts": float("nan")},
            {"x": 3, "ts": 1.7e9, "ends_at": 2e10}, {"x": 4, "ts": 1.7e9, "ends_at": None}]
    result = sink.write({"alerts": rows})
    assert [r["x"] for r in store.stored("alerts")] == [0, 4]
    assert [d.reason for d in result.dead] == ["clock"] * 3
    assert "alerts.ts=1e+308 is outside the store's time range" in result.dead[0].message
    assert sink.counters.rejected == {"clock": 3}


def test_several_refused_rows_of_one_message_make_one_dead_letter():
    store = FakeStore()
    source = RawMessage(topic="tg.steps", partition=0, offset=5, key=None, value=b"batch")
    rows = [{"x": 1, "ts": 1e308}, {"x": 2, "ts": 1e308}, {"x": 3, "ts": 1.7e9}]
    result = _sink(store).write({"steps": rows}, None, lambda table, i: source)
    assert len(result.dead) == 1 and len(store.stored("steps")) == 1


def test_a_store_outage_in_the_middle_of_a_bisect_is_retried_not_dead_lettered():
    store = FakeStore()
    sink = _sink(store)
    rows = [{"x": i} for i in range(8)]
    rows[3] = {"x": "poison"}
    original = store._insert

    def flaky(table, items, poisoned):
        if store.calls == 1 and not store.failures:
            store.failures = 1  # the store drops out once, half-way through the bisect
        original(table, items, poisoned)

    store._insert = flaky
    result = sink.write({"t": rows})
    assert len(result.dead) == 1 and sink.counters.retries == 1
    assert sorted(r["x"] for r in store.stored("t")) == [0, 1, 2, 4, 5, 6, 7]


def test_a_dead_letter_with_an_absurd_kafka_time_is_kept_with_the_write_time():
    store = FakeStore()
    row = {"topic": "t", "partition": 0, "offset": 1, "reason": "bad_json", "ts": 4.6e15}
    result = _sink(store).write({"dead_letters": [row]})
    assert result.dead == [] and store.stored("dead_letters") == [{**row, "ts": 1.7e9}]
