"""The event-time window's one-call check over a record's span agrees with the per-end check."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from trainguard.pipeline.ingest import Ingestor, RawMessage, TimeWindow
from trainguard.schemas.codec import encode
from trainguard.schemas.records import GpuSample, GpuSampleBatch
from trainguard.schemas.topics import Topics

WALL = 1_800_000_000.0
WINDOW = TimeWindow(max_future_s=600.0, max_past_s=7 * 86400.0)

#: Times around the window's edges, exact edges, and values no float comparison orders.
_EDGES = [WALL, WALL + 600.0, WALL + 600.0001, WALL - 7 * 86400.0, WALL - 7 * 86400.0 - 1e-3,
          0.0, 1e308, math.inf, -math.inf, math.nan]
_TIMES = st.one_of(st.sampled_from(_EDGES), st.floats(WALL - 10 * 86400.0, WALL + 1200.0))


def _per_end(first: float, last: float, broker: float | None, now: float) -> str | None:
    return WINDOW.why_not(last, broker, now) or WINDOW.why_not(first, broker, now)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(a=_TIMES, b=_TIMES, broker=st.one_of(st.none(), _TIMES), now=_TIMES)
def test_the_span_check_gives_the_per_end_answer_word_for_word(a, b, broker, now):
    first, last = min(a, b), max(a, b)
    assert WINDOW.why_not_span(first, last, broker, now) == _per_end(first, last, broker, now)


def test_a_span_reaching_past_the_window_is_refused_though_its_ends_are_given_reversed():
    # Callers pass (min, max); an inverted span must not slip through the short cut.
    assert WINDOW.why_not_span(WALL + 700.0, WALL, WALL, WALL) is not None


def test_a_kafka_timestamp_from_the_future_refuses_a_record_whose_ts_is_inside():
    why = WINDOW.why_not_span(WALL, WALL, WALL + 3600.0, WALL)
    assert why is not None and "ahead of the worker's clock" in why


def test_each_decoded_record_names_its_own_input_partition():
    topics = Topics("t")
    batch = GpuSampleBatch(cluster="c", node="n", ts=WALL, seq=0, agent_id="a",
                           gpus=[GpuSample(index=0)])
    msgs = [RawMessage(topics.samples, p, o, b"k", encode(batch), WALL)
            for o, p in enumerate([0, 2, 0, 1])]
    result = Ingestor(topics, clock=lambda: WALL).ingest(msgs)
    assert result.sources == [f"{topics.samples}:{p}" for p in (0, 2, 0, 1)]
